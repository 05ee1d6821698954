/* log_line.h - the bytes of one log line, JSON or text, apart from where
 * lines go (log.c).
 *
 * A request line is written on every request, so it is made without
 * bounds checks or strlen of names: every field is cut to a maximum, which
 * makes LOG_LINE_MAX a bound on any line, and the caller gives a buffer
 * that large (log.c formats straight into its ring when it has the room).
 * Only what may hold a client's bytes (method, path, request id) goes
 * through the escaper; the rest is ours and copied as it is. */
#ifndef TOKEND_LOG_LINE_H
#define TOKEND_LOG_LINE_H

#include <stddef.h>
#include "log.h"

#define LOG_LINE_MAX 4096
#define LOG_EVENT_MAX 8192

/* Writes r's line, '\n' included, to buf (LOG_LINE_MAX bytes); returns its
 * length. */
size_t log_line_request(char *buf, log_format format, const log_request *r);

/* An event's line, to buf (LOG_EVENT_MAX bytes). started: 0 before
 * log_start, when events are "tokend: msg". */
size_t log_line_event(char *buf, log_format format, int started, uint64_t time_ms,
                      log_level level, const char *event, const char *msg);

#endif
