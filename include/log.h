/* log.h - logging to stderr or syslog with levels; thread-safe. */
#ifndef WL_LOG_H
#define WL_LOG_H

typedef enum { LOG_LV_ERROR = 0, LOG_LV_WARN, LOG_LV_INFO, LOG_LV_DEBUG } LOG_Level;

/* Set up logging: ident for syslog, to syslog (1) or stderr (0). */
void LOG_Open(const char *ident, int use_syslog, LOG_Level level);

/* Change the level; parse a level name ("error", "warn", "info", "debug"). */
void LOG_SetLevel(LOG_Level level);
int LOG_ParseLevel(const char *name, LOG_Level *level);

/* Whether a message of this level would be written. */
int LOG_Enabled(LOG_Level level);

/* Write one message (no newline needed). */
void LOG_Msg(LOG_Level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void LOG_Close(void);

#define log_error(...) LOG_Msg(LOG_LV_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG_Msg(LOG_LV_WARN, __VA_ARGS__)
#define log_info(...)  LOG_Msg(LOG_LV_INFO, __VA_ARGS__)
#define log_debug(...) do { if (LOG_Enabled(LOG_LV_DEBUG)) LOG_Msg(LOG_LV_DEBUG, __VA_ARGS__); } while (0)

#endif
