/* Agent logging: one line per event on stderr, with a level filter. */
#ifndef RMEM_LOG_H
#define RMEM_LOG_H

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_level;

/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int log_parse_level(const char *s);
void log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_printf(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_printf(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_printf(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
  do {                                                                                             \
    if (log_level >= LOG_DEBUG)                                                                    \
      log_printf(LOG_DEBUG, __VA_ARGS__);                                                          \
  } while (0)

#endif
