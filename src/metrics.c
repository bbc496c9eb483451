/* metrics.c - the Prometheus text exposition format. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "ctl.h"
#include "daemon.h"
#include "metrics.h"
#include "srv.h"
#include "util.h"

const char *
MET_Label(const char *v, char *buf, size_t len)
{
  size_t o = 0;

  for (; *v && o + 3 < len; v++) {
    if (*v == '\\' || *v == '"') {
      buf[o++] = '\\';
      buf[o++] = *v;
    } else if (*v == '\n') {
      buf[o++] = '\\';
      buf[o++] = 'n';
    } else {
      buf[o++] = *v;
    }
  }
  buf[o] = '\0';
  return buf;
}

static void
family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
  evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
MET_Write(struct evbuffer *out, const void *dp, int http_readers, unsigned long http_dropped)
{
  const WLD_Daemon *d = dp;
  int n = CTL_LaserCount(d->ctl);
  char name[2 * CNF_NAME_MAX + 1], buf[512];
  unsigned long readings = 0;

  family(out, "wavelock_laser_frequency_hertz", "gauge",
         "Latest valid wavemeter reading of the laser (calibration applied).");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    if (l->have_reading && l->last.value > 0.0)
      evbuffer_add_printf(out, "wavelock_laser_frequency_hertz{laser=\"%s\"} %.17g\n",
                          MET_Label(l->cfg.name, name, sizeof name), l->last.value * 1e12);
  }
  family(out, "wavelock_laser_setpoint_hertz", "gauge", "Setpoint of the laser in force.");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    evbuffer_add_printf(out, "wavelock_laser_setpoint_hertz{laser=\"%s\"} %.17g\n",
                        MET_Label(l->cfg.name, name, sizeof name), l->setpoint_thz * 1e12);
  }
  family(out, "wavelock_laser_error_hertz", "gauge",
         "Latest reading minus setpoint (positive: the laser is too high).");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    if (l->have_reading && l->last.value > 0.0)
      evbuffer_add_printf(out, "wavelock_laser_error_hertz{laser=\"%s\"} %.9g\n",
                          MET_Label(l->cfg.name, name, sizeof name), l->last_error_mhz * 1e6);
  }
  family(out, "wavelock_laser_output_volts", "gauge",
         "Actuator output last acknowledged by the device.");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    MET_Label(l->cfg.name, name, sizeof name);
    evbuffer_add_printf(out, "wavelock_laser_output_volts{laser=\"%s\",actuator=\"piezo\"} %.9g\n",
                        name, l->piezo_v);
    if (l->current_dev)
      evbuffer_add_printf(out, "wavelock_laser_output_volts{laser=\"%s\",actuator=\"current\"} "
                          "%.9g\n", name, l->current_v);
  }
  family(out, "wavelock_laser_state", "gauge", "1 for the laser's present state, else 0.");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    MET_Label(l->cfg.name, name, sizeof name);
    for (int s = LSR_OFF; s <= LSR_FAULT; s++)
      evbuffer_add_printf(out, "wavelock_laser_state{laser=\"%s\",state=\"%s\"} %d\n", name,
                          LSR_StateName((LSR_StateId)s), l->sm.state == (LSR_StateId)s);
  }
  family(out, "wavelock_laser_cycles_total", "counter", "Control cycles run for the laser.");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    readings += l->readings;
    evbuffer_add_printf(out, "wavelock_laser_cycles_total{laser=\"%s\"} %lu\n",
                        MET_Label(l->cfg.name, name, sizeof name), l->cycles);
  }
  family(out, "wavelock_laser_write_errors_total", "counter", "Failed actuator writes.");
  for (int i = 0; i < n; i++) {
    const CTL_Laser *l = CTL_Laser_(d->ctl, i);

    evbuffer_add_printf(out, "wavelock_laser_write_errors_total{laser=\"%s\"} %lu\n",
                        MET_Label(l->cfg.name, name, sizeof name), l->write_errors);
  }
  family(out, "wavelock_device_up", "gauge", "1 while the Modbus device answers.");
  for (int i = 0; i < CTL_DeviceCount(d->ctl); i++) {
    char dev[CNF_NAME_MAX] = "";
    const char *p, *up;

    CTL_DeviceStatus(d->ctl, i, buf, sizeof buf);
    if (sscanf(buf, "name=%31s", dev) != 1)
      continue;
    p = strstr(buf, " up=");
    up = p ? p + 4 : "0";
    evbuffer_add_printf(out, "wavelock_device_up{device=\"%s\"} %d\n",
                        MET_Label(dev, name, sizeof name), up[0] == '1');
  }
  family(out, "wavelock_wavemeter_readings_total", "counter",
         "Wavemeter readings of the lasers' channels (error codes included).");
  evbuffer_add_printf(out, "wavelock_wavemeter_readings_total %lu\n", readings);
  family(out, "wavelock_clients", "gauge",
         "Connected text-protocol clients plus HTTP event-stream readers.");
  evbuffer_add_printf(out, "wavelock_clients %d\n",
                      (d->srv ? SRV_ClientCount(d->srv) : 0) + http_readers);
  family(out, "wavelock_http_events_dropped_total", "counter",
         "Events dropped for event-stream readers that could not keep up.");
  evbuffer_add_printf(out, "wavelock_http_events_dropped_total %lu\n", http_dropped);
}
