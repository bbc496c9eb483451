/* conf.h - the configuration file (libconfig), loaded and range-checked once.
 *
 * CNF_Load reads a file into a CNF_Config; every value is checked here, so the
 * rest of wavelock reads plain typed fields.  Errors name the file, the line
 * and the key:  "conf/x.conf:12: lasers.[2].pid.ki: must be >= 0".
 * Key names are the contract of DESIGN.md section 4.
 */
#ifndef WL_CONF_H
#define WL_CONF_H

#include <stddef.h>
#include "regenc.h"

#define CNF_NAME_MAX 32
#define CNF_PATH_MAX 512
#define CNF_MAX_LISTEN 8
#define CNF_MAX_TOKENS 32
/* Wavemeter channels 1..CNF_MAX_CHANNEL; also the most lasers a config may
   hold (each laser has its own channel).  Real wavemeters have at most 17;
   the scale benchmark builds a copy of wavelockd with -DCNF_MAX_CHANNEL=1024. */
#ifndef CNF_MAX_CHANNEL
#define CNF_MAX_CHANNEL 64
#endif
/* Channels the wlmdata backend reads (cmiWavelength1..17): a laser on a
   higher channel is a config error with that backend. */
#define CNF_WLMDATA_MAX_CHANNEL 17

typedef enum { CNF_ROLE_NONE = 0, CNF_ROLE_MONITOR = 1, CNF_ROLE_CONTROL = 2 } CNF_Role;
typedef enum { CNF_WM_STREAM = 0, CNF_WM_WLMDATA } CNF_WmBackend;
typedef enum { CNF_URL_TCP = 0, CNF_URL_RTU } CNF_UrlKind;

/* A parsed Modbus device URL:
   tcp://host:port   or   rtu:/dev/ttyX?baud=19200&parity=N&data=8&stop=1 */
typedef struct {
  CNF_UrlKind kind;
  char host[256];          /* tcp: host name or address; rtu: device path */
  int port;                /* tcp */
  int baud;                /* rtu, default 19200 */
  char parity;             /* rtu: 'N', 'E' or 'O', default 'N' */
  int data_bits;           /* rtu, default 8 */
  int stop_bits;           /* rtu, default 1 */
} CNF_Url;

/* Parse a device URL; 0 on success, -1 with a message in err. */
int CNF_ParseUrl(const char *text, CNF_Url *url, char *err, size_t errlen);

/* Parse "host:port" (IPv4, name, or [v6]:port); 0 on success. */
int CNF_ParseHostPort(const char *text, char *host, size_t hostlen, int *port);

typedef struct {
  char secret[128];
  CNF_Role role;
} CNF_Token;

typedef struct {
  char listen[CNF_MAX_LISTEN][128];  /* "host:port"; port 0 = any free port */
  int n_listen;
  int max_clients;                   /* default 64 */
  int idle_timeout_s;                /* 0 = none; default 0 */
  int line_timeout_s;                /* partial line stalled this long: close; default 30 */
  int auth_timeout_s;                /* tokens: not authenticated this long: close; default 60 */
  CNF_Token tokens[CNF_MAX_TOKENS];
  int n_tokens;
} CNF_Server;

/* The http group (DESIGN.md section 9): off unless listen is given.
   Tokens and roles are server.tokens. */
typedef struct {
  char listen[CNF_MAX_LISTEN][128];  /* "host:port"; none: HTTP off */
  int n_listen;
  int max_event_readers;             /* /api/events streams at once; default 256 */
  int session_s;                     /* browser session lifetime; default 43200 */
} CNF_Http;

typedef struct {
  CNF_WmBackend backend;
  char library[CNF_PATH_MAX];        /* wlmdata: default "libwlmData.so" */
  char address[128];                 /* stream: "host:port", default 127.0.0.1:7480 */
  int stale_ms;                      /* default 1000 */
  int poll_ms;                       /* wlmdata polling fallback interval, default 100 */
  int callback_silence_ms;           /* wlmdata: no callback this long -> poll; default 2000 */
  int need_calibration;              /* calibration.mode "wlmdata": the library must
                                        have Calibration() (set by the loader) */
} CNF_Wavemeter;

/* How a device is probed before it counts as up (probe.function). */
typedef enum {
  CNF_PROBE_HOLDING = 0,             /* read one holding register, FC03 (default) */
  CNF_PROBE_INPUT,                   /* read one input register, FC04 */
  CNF_PROBE_NONE                     /* no read: up once connected (write-only modules) */
} CNF_ProbeFn;

typedef struct {
  char name[CNF_NAME_MAX];
  char url[256];
  CNF_Url parsed;
  int unit;                          /* Modbus unit id, default 1 */
  int timeout_ms;                    /* response timeout, default 200 */
  CNF_ProbeFn probe_fn;              /* probe.function, default holding */
  int probe_reg;                     /* probe.register 0..65535; -1 (default): the
                                        lowest register the lasers use on the device */
  int combine_writes;                /* lasers' writes to adjacent registers may share
                                        one request (function 16); default false */
  int line;                          /* config line, for messages */
} CNF_Device;

typedef struct {
  int present;                       /* group given in the config */
  char device[CNF_NAME_MAX];
  int device_index;                  /* index into CNF_Config.devices */
  int reg;                           /* first holding register (0-based) */
  REG_Encoding enc;                  /* format, word_order, scale, offset */
  double min_v, max_v;               /* hard output limits */
  double start_v;                    /* output at start (default mid-range, clamped) */
  double max_step_v;                 /* slew limit per update, <= 0 none; default 0 */
  double feedforward;                /* current only: V per V of piezo, default 0 */
} CNF_Actuator;

/* Physics of a simulated laser (wavelock-sim only; DESIGN.md section 6). */
typedef struct {
  double offset_mhz;          /* free-running offset from the setpoint at start_v */
  double piezo_mhz_per_v;     /* default 300 */
  double current_mhz_per_v;   /* default 50 */
  double piezo_lag_ms;        /* default 1 */
  double current_lag_ms;      /* default 100 */
  double walk_mhz_rts;        /* random walk, MHz/sqrt(s); default 2 */
  double sine_mhz;            /* slow sine amplitude; default 5 */
  double sine_period_s;       /* default 600 */
  double linear_mhz_per_h;    /* default 20 */
  double modehop_per_h;       /* spontaneous mode hops per hour; default 0 */
  double modehop_mhz;         /* size of a hop; default 8000 */
  double modehop_s;           /* how long a hop lasts before the laser falls back; default 3 */
  double modehop_free_v;      /* > 0: persistent hops, mode-hop-free window in piezo volts;
                                 default 0 (hops last modehop_s) */
  double hysteresis_v;        /* persistent hops: tuning back past the hop point; default 0.3 */
  double noise_mhz;           /* wavemeter white noise rms; default 1 */
  double exposure_ms;         /* per channel; default 10 */
  double error_rate;          /* fraction of readings that are error codes; default 0 */
} CNF_SimLaser;

/* Most grid points per actuator of a relock search, each way. */
#define CNF_RELOCK_MAX_STEPS 1000

/* Largest |pid.sensitivity_mhz_per_v| (MHz/V). */
#define CNF_MAX_SENSITIVITY 1e7

/* Relock search (DESIGN.md section 8, the laser's relock group): after
   after_s in relocking, a grid around the last good output. */
typedef struct {
  double after_s;                    /* default 2 */
  double piezo_span_v;               /* +- this around the last good piezo; default 1 */
  double piezo_step_v;               /* default 0.1 */
  double current_span_v;             /* default 0 (no current steps) */
  double current_step_v;             /* default 0 */
  int settle_readings;               /* readings discarded after a step; default 1 */
  int tries;                         /* passes before fault; default 3 */
} CNF_Relock;

/* A hold input (DESIGN.md section 8): a discrete input or coil of a device
   that holds the laser while active, polled by the device's thread. */
typedef struct {
  int present;                       /* group given in the config */
  char device[CNF_NAME_MAX];
  int device_index;                  /* index into CNF_Config.devices */
  int addr;                          /* 0..65535 */
  int coil;                          /* 1: a coil (FC01), 0: a discrete input (FC02) */
  int active_low;                    /* active = "low" */
  double poll_s;                     /* poll interval, default 0.02 */
  /* As read from the config (the table of src/conf.c), before the checks
     turn them into the fields above. */
  char active[16];                   /* "high" (or empty), "low" */
  int di_key, coil_key;              /* discrete_input, coil; -1 absent */
} CNF_HoldInput;

typedef struct {
  char name[CNF_NAME_MAX];
  int channel;                       /* wavemeter channel 1..CNF_MAX_CHANNEL (wlmdata:
                                        1..CNF_WLMDATA_MAX_CHANNEL) */
  double setpoint_thz;
  int autolock;                      /* default 0 */
  double window_mhz;                 /* default 5 */
  double capture_mhz;                /* default 2000 */
  double modehop_mhz;                /* default 1000; 0 off */
  double glitch_mhz;                 /* a single reading this far from the last one is
                                        held back until confirmed; default 500; 0 off */
  int lock_n, unlock_m;              /* defaults 5, 3 */
  double min_thz, max_thz;           /* allowed setpoint range (required) */
  double kp, ki, kd;                 /* pid group; defaults 0, 0.002, 0 */
  double d_tau_s;                    /* pid.d_filter_s, default 0.05 */
  int polarity;                      /* pid.polarity, +1 (default) or -1 */
  double max_dt_s;                   /* pid.max_dt_s, default 1.0 */
  double sensitivity_mhz_per_v;      /* pid.sensitivity_mhz_per_v: setpoint feed-forward,
                                        0 (default) = none; its magnitude is used */
  CNF_Actuator piezo;                /* required */
  CNF_Actuator current;              /* optional (present = 0) */
  char datalog[CNF_PATH_MAX];        /* per-laser data log, "" = none */
  CNF_Relock relock;                 /* relock group */
  CNF_HoldInput hold_input;          /* hold_input group (present = 0: none) */
  CNF_SimLaser sim;
  int line;
} CNF_Laser;

/* Most reference lasers in sim.references. */
#define CNF_MAX_SIM_REFERENCES 8

/* A simulated reference laser (sim.references: wavelock-sim only): a fixed
   true frequency on its own wavemeter channel, no actuator. */
typedef struct {
  char name[CNF_NAME_MAX];           /* unique among lasers and references */
  int channel;                       /* not used by a laser or another reference */
  double thz;                        /* frequency (same syntax as a setpoint) */
  double noise_mhz;                  /* wavemeter white noise rms; default 1 */
  double exposure_ms;                /* default 10 */
  int line;
} CNF_SimReference;

typedef struct {
  unsigned long seed;                /* sim.seed, default 1 */
  char control[128];                 /* sim.control "host:port", default 127.0.0.1:7481 */
  double switch_ms;                  /* sim.switch_ms fibre switch settle, default 1 */
  double speed;                      /* sim.speed time factor, default 1 */
  /* The wavemeter's calibration error, a relative error common to every
     channel, in ppb (1 ppb = 0.384 MHz at 384 THz); all default 0. */
  double calib_offset_ppb;           /* sim.calibration_offset_ppb: at t = 0 */
  double calib_drift_ppb_per_min;    /* sim.calibration_drift_ppb_per_min: linear rate */
  double calib_walk_ppb_rts;         /* sim.calibration_walk_ppb_rts: random walk, ppb/sqrt(s) */
  CNF_SimReference references[CNF_MAX_SIM_REFERENCES];
  int n_references;                  /* sim.references */
} CNF_Sim;

typedef enum { CNF_CAL_CORRECT = 0, CNF_CAL_WLMDATA } CNF_CalMode;

/* The calibration group (DESIGN.md section 7): a reference laser of known
   frequency on one channel, against which every other reading is corrected
   (correct) or the wavemeter calibrates itself (wlmdata). */
typedef struct {
  int present;                       /* the group is in the file */
  int channel;                       /* the reference's channel (a laser may share it) */
  double thz;                        /* frequency: the reference's true frequency */
  CNF_CalMode mode;                  /* default correct */
  double tau_s;                      /* correct: tracking filter time constant; default 30 */
  double max_rate_mhz_per_min;       /* faster apparent drift: hold; default 10 */
  double tolerance_mhz;              /* reference farther than this: hold; default 50 */
  double period_s;                   /* wlmdata: calibrate this often; default 600 */
  int line;
} CNF_Calibration;

/* The mqtt group (DESIGN.md section 10): publish to and take commands from
   an MQTT broker. */
typedef enum { CNF_MQTT_AUTO = 0, CNF_MQTT_V5 = 5, CNF_MQTT_V311 = 4 } CNF_MqttProtocol;

typedef struct {
  int present;                       /* the group is in the file */
  char url[256];                     /* url = "mqtt://host[:port]" | "mqtts://host[:port]" */
  char host[256];                    /* from url */
  int port;                          /* from url; default 1883, mqtts 8883 */
  int tls;                           /* mqtts:// */
  char instance[CNF_NAME_MAX];       /* topics under wavelock/<instance>/ (required) */
  char username[128];                /* "" = none */
  char password_file[CNF_PATH_MAX];  /* its first line is the password; "" = none */
  char password[256];                /* read from password_file at load */
  char cafile[CNF_PATH_MAX];         /* CA certificates for mqtts (default: the system's) */
  int commands;                      /* take command lines on .../cmd; default false */
  int keepalive_s;                   /* default 30 */
  int reading_interval_ms;           /* at most one reading per laser this often; 0 = all */
  int queue;                         /* outgoing messages waiting for the broker; default 8192 */
  CNF_MqttProtocol protocol;         /* protocol = "auto" (5, then 3.1.1) | "5" | "3.1.1" */
  int remote;                        /* keep the other instances' retained state (for the
                                        dashboard); default: true when http is on */
  int line;
} CNF_Mqtt;

typedef struct {
  char path[CNF_PATH_MAX];           /* the file this was loaded from */
  CNF_Server server;
  CNF_Http http;
  char state_file[CNF_PATH_MAX];     /* "" = no state file; relative to the config's directory */
  char log_target[64];               /* log = "stderr" | "syslog"; default stderr */
  char log_level[16];                /* log_level = "error".."debug"; default "info" */
  char pid_file[CNF_PATH_MAX];       /* "" = none */
  char user[64];                     /* drop privileges to this user after binding */
  CNF_Wavemeter wavemeter;
  CNF_Device *devices;
  int n_devices;
  CNF_Laser *lasers;
  int n_lasers;
  CNF_Calibration calibration;
  CNF_Sim sim;
  CNF_Mqtt mqtt;
} CNF_Config;

/* Load and check a config file.  On success returns a new config (free with
   CNF_Free); on error returns NULL and writes "file:line: key: message" to err. */
CNF_Config *CNF_Load(const char *path, char *err, size_t errlen);

/* Free a config (NULL is fine). */
void CNF_Free(CNF_Config *cfg);

/* Index of the laser or device with this name, -1 if none. */
int CNF_FindLaser(const CNF_Config *cfg, const char *name);
int CNF_FindDevice(const CNF_Config *cfg, const char *name);

/* Whether a listen address is loopback-only (127.0.0.0/8, ::1, localhost). */
int CNF_IsLoopback(const char *host);

#endif
