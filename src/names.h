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
 * its normalized form into out (outlen bytes): the key of its account.
 * Returns 0, or -1 with `why` set when it cannot be any of them. A login
 * name is held to the rules of a name as it is found, not to those only a
 * new account must meet (names_normalize_username). */
int names_classify(const char *in, size_t len, login_kind *kind, char *out, size_t outlen,
                   const char **why);

/* The key an account made before names were canonical (Unicode NFC, width
 * mapping, every script's case in emails) has under the login name in (len
 * bytes) of that kind, whose key is now `key`: its bytes as given (emails:
 * ASCII lower-cased). Returns 1 with it in out when it differs from key,
 * else 0: a login looks there when key finds nothing. */
int names_legacy_key(const char *in, size_t len, login_kind kind, const char *key, char *out,
                     size_t outlen);

/* Each writes the canonical form of in into out (outlen bytes) and
 * returns 0, or -1 with `why` saying what is wrong; out may be in. A new
 * username may not mix scripts that look alike. */
int names_normalize_username(const char *in, char *out, size_t outlen, const char **why);
int names_normalize_phone(const char *in, char *out, size_t outlen, const char **why);
int names_normalize_email(const char *in, char *out, size_t outlen, const char **why);

/* 0 when valid, else -1 with `why` saying what is wrong. */
int names_check_password(const char *pw, size_t len, const char **why);

#endif
