/* metrics.h - the Prometheus text exposition of wavelockd (DESIGN.md
 * section 9), SI units: frequencies and errors in hertz, outputs in volts. */
#ifndef WL_METRICS_H
#define WL_METRICS_H

#include <stddef.h>

struct evbuffer;

/* Append the exposition for the daemon d (a const WLD_Daemon *) to out;
   http_readers and http_dropped are the HTTP server's event-stream figures. */
void MET_Write(struct evbuffer *out, const void *d, int http_readers,
               unsigned long http_dropped);

/* Escape a label value (\ " and newline) into buf; returns buf. */
const char *MET_Label(const char *v, char *buf, size_t len);

#endif
