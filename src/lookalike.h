/* lookalike.h - when two usernames look the same to a person: the keys a
 * new name is checked against, so that nobody takes a name others would
 * read as an existing account's ('Alice' for 'alice', Cyrillic 'аре' for
 * 'ape', 'adrnin' for 'admin'). */
#ifndef TOKEND_LOOKALIKE_H
#define TOKEND_LOOKALIKE_H

#include <stddef.h>
#include <stdint.h>

#define LOOKALIKE_KEY_MAX 96   /* a longer key is its digest: 0x01 and 32 hex digits */

/* The two keys of name (len bytes; any bytes), each at most
 * LOOKALIKE_KEY_MAX bytes, never holding a NUL. case_key is the same for
 * names that differ in case or in letters that look alike (the folded
 * UTS #39 skeleton of the case-folded name: "alice" for "ALICE"), look_key
 * for those that differ in letters that look alike in one case only (the
 * folded skeleton: capital 'I' and 'l'). Two names look the same when
 * either key is the same. A name that is not UTF-8 has keys of its bytes
 * alone. Returns 0, or -1 when the Unicode data cannot be had (out of
 * memory). */
int lookalike_keys(const char *name, size_t len, char *case_key, size_t *case_len, char *look_key,
                   size_t *look_len);

/* What the keys are made with (this file's rules, ICU's and Unicode's
 * versions, libunistring's): keys made with another are not comparable,
 * so an index of them is made again. */
const char *lookalike_version(void);

/* The same, always through ICU (lookalike_keys takes most ASCII names
 * from a table ICU filled): tests hold the two to one answer. */
int lookalike_keys_icu(const char *name, size_t len, char *case_key, size_t *case_len,
                       char *look_key, size_t *look_len);

#endif
