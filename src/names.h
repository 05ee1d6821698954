/* names.h - what a login name is: phone, email or username, and the rules
 * each must follow. One file so the CLI, the RPC handlers and the fuzzer
 * agree on them. */
#ifndef TOKEND_NAMES_H
#define TOKEND_NAMES_H

#include <stddef.h>
#include "store.h"

#define NAMES_PHONE_MAX 20
#define NAMES_EMAIL_MAX 254

/* Classifies a login name (email has '@'; phone is digits with an optional
 * leading '+', spaces, '-', '(' and ')' dropped; else username) and writes
 * its normalized form into out (outlen bytes). Returns 0, or -1 with `why`
 * set when it cannot be any of them. */
int names_classify(const char *in, size_t len, login_kind *kind, char *out, size_t outlen,
                   const char **why);

/* Each returns 0 when valid, else -1 with `why` saying what is wrong. */
int names_check_username(const char *name, const char **why);
int names_normalize_phone(const char *in, char *out, size_t outlen, const char **why);
int names_normalize_email(const char *in, char *out, size_t outlen, const char **why);
int names_check_password(const char *pw, size_t len, const char **why);

#endif
