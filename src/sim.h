/* sim.h - internals of wavelock-sim shared by src/sim*.c.
 *
 * wavelock-sim is one event loop (libevent, one thread): the Modbus TCP
 * servers (sim_modbus.c), the wavemeter stream publisher (sim_stream.c) and
 * the control port (sim_control.c) all run on SIM.base.  The physics is the
 * pure plant module (plant.h); this side only feeds it simulated time:
 * t = (monotonic clock - start) * speed.
 */
#ifndef WL_SIM_H
#define WL_SIM_H

#include <stdint.h>
#include <event2/listener.h>

#include "conf.h"
#include "plant.h"

/* One actuator input of a simulated laser, with its write statistics. */
typedef struct {
  char name[CNF_NAME_MAX + 8];   /* "<laser>.piezo" or "<laser>.current" */
  int laser;                     /* index into SIM.cfg->lasers */
  int is_current;
  const CNF_Actuator *cfg;
  int nregs;                     /* 1 or 2 */
  unsigned pending;              /* registers written since the last complete value */
  unsigned long count;           /* complete values written */
  unsigned long violations;      /* values outside min_v..max_v (or not finite) */
  double min_v, max_v, last_v;   /* NAN until the first write */
  /* Limits in force in the daemon as a test says (`limits`): a value
     outside them written later than SIM_LIMITS_GRACE_S after they were
     set counts as a run-time violation. */
  double in_lo, in_hi, in_since;
  unsigned long runtime_violations;
} SIM_Actuator;

/* A write that left the daemon before it took new limits arrives within
   this (real) time of the test telling the simulator. */
#define SIM_LIMITS_GRACE_S 0.2

typedef struct {
  CNF_Config *cfg;
  struct event_base *base;
  uint64_t seed;
  double speed;                  /* simulated seconds per real second */
  double t0;                     /* monotonic time of simulated t = 0 */
  PLT_Laser **lasers;            /* one per cfg->lasers[i], then one per
                                    cfg->sim.references[i - cfg->n_lasers] */
  int n_plant;                   /* lasers + reference lasers */
  PLT_Wavemeter *wm;
  SIM_Actuator *acts;
  int n_acts;
  unsigned long readings;        /* published so far */
} SIM_Context;

extern SIM_Context SIM;

/* Simulated time now, seconds. */
double SIM_Time(void);

/* Bring the simulation up to now: publish every reading that is due, and
   return the simulated time it got to.  Act on the plant at exactly that
   time, so that no reading still due is computed after the laser moved on. */
double SIM_Sync(void);

/* Listen on host:port ("*" or "" = any address); NULL after logging why. */
struct evconnlistener *SIM_Listen(const char *host, int port, evconnlistener_cb cb, void *arg,
                                  const char *what);

/* Format a listener's bound address as "host:port" into buf. */
void SIM_ListenerName(struct evconnlistener *l, char *buf, size_t len);

/* Modbus TCP servers: one per distinct host:port of the configured devices. */
int SIM_ModbusInit(void);
void SIM_ModbusFini(void);

typedef enum { SIM_OUTAGE_NONE = 0, SIM_OUTAGE_SILENT, SIM_OUTAGE_DROP, SIM_OUTAGE_REFUSE } SIM_Outage;

/* Start an outage of the server of device index dev (-1: every server) for
   seconds of real time; SIM_OUTAGE_NONE ends it now. */
void SIM_ModbusOutage(int dev, SIM_Outage mode, double seconds);

/* Name of an outage mode; parse one ("silent", "drop", "refuse", "off"). */
const char *SIM_OutageName(SIM_Outage mode);
int SIM_ParseOutage(const char *text, SIM_Outage *mode);

/* Coils and discrete inputs each device serves: addresses 0..SIM_BITS-1
   (function 01/05/15 for coils, 02 for discrete inputs; all 0 at start). */
#define SIM_BITS 256

/* Set (value 0 or 1) or read (value -1) coil (coil = 1) or discrete input
   addr of device index dev; returns its value, or -1 for no such bit. */
int SIM_ModbusBit(int dev, int coil, int addr, int value);

/* Current outage of the server of device index dev. */
SIM_Outage SIM_ModbusOutageOf(int dev);

/* Wavemeter stream publisher on cfg->wavemeter.address. */
int SIM_StreamInit(void);
void SIM_StreamFini(void);

/* Publish every reading due at or before simulated time t. */
void SIM_StreamPump(double t);

/* Format a reading as a stream line ("<channel> <THz> <time_ms>\n"). */
int SIM_FormatReading(const PLT_Reading *r, char *buf, size_t len);

/* Number of stream clients connected. */
int SIM_StreamClients(void);

/* Publish the next count valid readings of channel off by mhz (a glitch:
   the laser itself does not move); count 0 cancels.  -1 if no laser or
   reference laser uses the channel. */
int SIM_StreamGlitch(int channel, double mhz, int count);

/* Control port (line protocol) on addr "host:port". */
int SIM_ControlInit(const char *addr);
void SIM_ControlFini(void);

#endif
