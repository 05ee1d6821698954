/* fuzz_login_name.c - libFuzzer target of src/names.c, the rules of login
 * names and passwords.
 *
 * Input: the whole input is a login name (names_classify, with the size
 * the RPC handlers use and with small buffers) and a password
 * (names_check_password); its NUL-terminated copy goes to
 * names_normalize_username, names_normalize_phone and names_normalize_email
 * with exact-size heap buffers. What is accepted must have the shape its
 * kind promises and classify to itself again (normalizing is idempotent);
 * an old key (names_legacy_key) differs from the key; every refusal says
 * why. The input's look-alike keys (lookalike.c) are short, hold no NUL,
 * come out the same twice, and for ASCII the same as ICU's; an ASCII
 * name's upper case has its case key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lookalike.h"
#include "names.h"

#include "fuzz_check.h"

static void check_phone(const char *p)
{
    size_t i = p[0] == '+', digits = 0;
    for (; p[i]; i++, digits++)
        CHECK(p[i] >= '0' && p[i] <= '9');
    CHECK(digits >= 3 && digits <= NAMES_PHONE_MAX);
}

static void check_email(const char *e)
{
    const char *at = strchr(e, '@');
    CHECK(at && at != e && at[1] && !strchr(at + 1, '@') && strchr(at + 1, '.'));
    CHECK(strlen(e) <= NAMES_EMAIL_MAX);
    for (const unsigned char *p = (const unsigned char *)e; *p; p++)
        CHECK(*p > ' ' && *p != 0x7F && !(*p >= 'A' && *p <= 'Z'));
}

static void classify(const char *in, size_t len, size_t outlen)
{
    char *out = malloc(outlen);
    const char *why = NULL;
    login_kind kind = 0;
    if (!out)
        return;
    if (names_classify(in, len, &kind, out, outlen, &why) != 0) {
        CHECK(why && why[0]);
        free(out);
        return;
    }
    CHECK(memchr(out, '\0', outlen));
    switch (kind) {
    case LOGIN_PHONE: check_phone(out); break;
    case LOGIN_EMAIL: check_email(out); break;
    case LOGIN_NAME: {
        /* an ASCII name is its own key; a new account may have it unless
         * it mixes look-alike scripts (which a login may still name) */
        int ascii = 1;
        for (size_t i = 0; i < len; i++)
            ascii &= (unsigned char)in[i] < 0x80;
        if (ascii)
            CHECK(strlen(out) == len && memcmp(out, in, len) == 0);
        char *named = malloc(outlen);
        if (named) {
            if (names_normalize_username(out, named, outlen, &why) == 0)
                CHECK(strcmp(named, out) == 0);
            else
                CHECK(why && strstr(why, "look alike"));
            free(named);
        }
        break;
    }
    default: CHECK(!"unknown kind");
    }
    /* the old key differs from the key when there is one */
    char *old = malloc(outlen);
    if (old) {
        login_kind old_kind = 0;
        if (names_legacy_key(in, len, kind, out, &old_kind, old, outlen))
            CHECK((old_kind != kind || strcmp(old, out) != 0) && strlen(old) == len &&
                  (old_kind == LOGIN_NAME || old_kind == LOGIN_EMAIL));
        free(old);
    }
    /* the normalized form is a fixed point */
    size_t n = strlen(out);
    char *again = malloc(outlen);
    login_kind k2 = 0;
    if (again) {
        CHECK(names_classify(out, n, &k2, again, outlen, &why) == 0);
        CHECK(k2 == kind && strcmp(again, out) == 0);
        free(again);
    }
    free(out);
}

typedef struct {
    char c[LOOKALIKE_KEY_MAX], l[LOOKALIKE_KEY_MAX];
    size_t clen, llen;
} look_keys;

static int keys_of(const char *in, size_t len, look_keys *k, int icu)
{
    int rc = icu ? lookalike_keys_icu(in, len, k->c, &k->clen, k->l, &k->llen)
                 : lookalike_keys(in, len, k->c, &k->clen, k->l, &k->llen);
    if (rc == 0)
        CHECK(k->clen <= LOOKALIKE_KEY_MAX && k->llen <= LOOKALIKE_KEY_MAX &&
              !memchr(k->c, 0, k->clen) && !memchr(k->l, 0, k->llen));
    return rc;
}

static int same_keys(const look_keys *a, const look_keys *b)
{
    return a->clen == b->clen && a->llen == b->llen && memcmp(a->c, b->c, a->clen) == 0 &&
           memcmp(a->l, b->l, a->llen) == 0;
}

static void lookalike(const char *in, size_t len)
{
    look_keys a, b;
    int ascii = 1, upper_differs = 0;
    CHECK(keys_of(in, len, &a, 0) == 0);
    CHECK(keys_of(in, len, &b, 0) == 0 && same_keys(&a, &b));
    for (size_t i = 0; i < len; i++)
        ascii &= (unsigned char)in[i] < 0x80 && in[i] != 0;
    if (!ascii || len > 512)
        return;
    CHECK(keys_of(in, len, &b, 1) == 0 && same_keys(&a, &b));
    char up[512];
    for (size_t i = 0; i < len; i++) {
        up[i] = in[i] >= 'a' && in[i] <= 'z' ? (char)(in[i] - 32) : in[i];
        upper_differs |= up[i] != in[i];
    }
    if (upper_differs) {
        CHECK(keys_of(up, len, &b, 0) == 0);
        CHECK(a.clen == b.clen && memcmp(a.c, b.c, a.clen) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *why = NULL;
    /* the handlers' buffer (rpc_token.c: NAMES_EMAIL_MAX + 2), and small ones */
    classify(in, size, NAMES_EMAIL_MAX + 2);
    classify(in, size, size + 1);
    if (size)
        classify(in, size, size);
    classify(in, size, 4);
    lookalike(in, size);

    int pw = names_check_password(in, size, &why);
    CHECK(pw == 0 || (why && why[0]));
    CHECK(pw != 0 || (size >= 8 && !memchr(in, '\0', size)));

    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, in, size);
    s[size] = '\0';
    size_t len = strlen(s);
    why = NULL;
    char *named = malloc(STORE_NAME_MAX + 1);
    if (named && names_normalize_username(s, named, STORE_NAME_MAX + 1, &why) == 0) {
        size_t nl = strlen(named);
        CHECK(nl > 0 && nl <= STORE_NAME_MAX && !strchr(named, '@') && !strchr(named, ' '));
        char *again = malloc(STORE_NAME_MAX + 1);   /* canonical: a fixed point */
        if (again) {
            CHECK(names_normalize_username(named, again, STORE_NAME_MAX + 1, &why) == 0);
            CHECK(strcmp(again, named) == 0);
            free(again);
        }
    } else if (named) {
        CHECK(why && why[0]);
    }
    free(named);
    (void)len;

    static const size_t caps[] = {1, 2, 4, NAMES_PHONE_MAX + 2};
    for (size_t k = 0; k < sizeof caps / sizeof *caps; k++) {
        char *out = malloc(caps[k]);
        if (!out)
            break;
        why = NULL;
        if (names_normalize_phone(s, out, caps[k], &why) == 0) {
            CHECK(memchr(out, '\0', caps[k]));
            check_phone(out);
        } else {
            CHECK(why && why[0]);
        }
        free(out);
    }
    size_t ecap = len + 1;
    char *e = malloc(ecap);
    if (e) {
        why = NULL;
        if (names_normalize_email(s, e, ecap, &why) == 0) {
            CHECK(strlen(e) < ecap);   /* the canonical form may be shorter (width), or longer */
            check_email(e);
            char *again = malloc(ecap);
            if (again) {
                CHECK(names_normalize_email(e, again, ecap, &why) == 0 && strcmp(again, e) == 0);
                free(again);
            }
        } else {
            CHECK(why && why[0]);
        }
        free(e);
    }
    free(s);
    return 0;
}
