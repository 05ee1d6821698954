/* status.h - the one error model: every failure is a gRPC status code, and
 * the HTTP status (and the JSON envelope's "code") follows from it the way
 * grpc-gateway maps them, so all wire forms agree on what went wrong. */
#ifndef TOKEND_STATUS_H
#define TOKEND_STATUS_H

typedef enum {
    ST_OK = 0,
    ST_CANCELLED = 1,
    ST_UNKNOWN = 2,
    ST_INVALID_ARGUMENT = 3,
    ST_DEADLINE_EXCEEDED = 4,
    ST_NOT_FOUND = 5,
    ST_ALREADY_EXISTS = 6,
    ST_PERMISSION_DENIED = 7,
    ST_RESOURCE_EXHAUSTED = 8,
    ST_FAILED_PRECONDITION = 9,
    ST_ABORTED = 10,
    ST_OUT_OF_RANGE = 11,
    ST_UNIMPLEMENTED = 12,
    ST_INTERNAL = 13,
    ST_UNAVAILABLE = 14,
    ST_DATA_LOSS = 15,
    ST_UNAUTHENTICATED = 16
} status_code;

/* HTTP status for a gRPC status code. */
static inline int status_http(status_code c)
{
    switch (c) {
    case ST_OK: return 200;
    case ST_CANCELLED: return 499;
    case ST_INVALID_ARGUMENT: case ST_FAILED_PRECONDITION: case ST_OUT_OF_RANGE: return 400;
    case ST_UNAUTHENTICATED: return 401;
    case ST_PERMISSION_DENIED: return 403;
    case ST_NOT_FOUND: return 404;
    case ST_ALREADY_EXISTS: case ST_ABORTED: return 409;
    case ST_RESOURCE_EXHAUSTED: return 429;
    case ST_UNIMPLEMENTED: return 501;
    case ST_UNAVAILABLE: return 503;
    case ST_DEADLINE_EXCEEDED: return 504;
    default: return 500;
    }
}

#endif
