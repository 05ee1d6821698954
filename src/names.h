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
 * bytes): its bytes as given (an email's ASCII lower-cased), of the kind
 * the old rules gave it (a fullwidth '＠' made no email). Returns 1 with
 * it in out and its kind in *old_kind when it is not (kind, key), the
 * canonical one (kind and key as names_classify gave them; any when that
 * refused the name), else 0. Only such an account can have that key: a
 * login looks there first, so that it keeps finding its account by the
 * bytes it always used, and the canonical key after. */
int names_legacy_key(const char *in, size_t len, login_kind kind, const char *key,
                     login_kind *old_kind, char *out, size_t outlen);

/* Each writes the canonical form of in into out (outlen bytes) and
 * returns 0, or -1 with `why` saying what is wrong; out may be in. A new
 * username may not mix scripts that look alike. */
int names_normalize_username(const char *in, char *out, size_t outlen, const char **why);
int names_normalize_phone(const char *in, char *out, size_t outlen, const char **why);
int names_normalize_email(const char *in, char *out, size_t outlen, const char **why);

/* 0 when valid, else -1 with `why` saying what is wrong. */
int names_check_password(const char *pw, size_t len, const char **why);

#endif
