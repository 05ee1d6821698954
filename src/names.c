/* names.c - login names and password policy.
 *
 * A username must hold at least one letter, '_' or CJK character, so a
 * login name of digits alone is always a phone number and never ambiguous.
 * Usernames and emails are compared in one canonical form, so that the
 * forms a keyboard or an operating system may send of one name find one
 * account: fullwidth and halfwidth forms mapped to their usual width
 * (RFC 8265's rule: 'ａｌｉｃｅ' is 'alice'), then Unicode NFC ('é' as one
 * character or as 'e' and a combining accent are one 'é'; Hangul typed as
 * jamo is its syllables). Usernames keep their case; emails are
 * lower-cased (every script's case, not only ASCII's); phones keep only
 * digits and a leading '+'. A new username may not mix the scripts whose
 * letters look alike (Latin 'a' and Cyrillic 'а'), nor look like a taken
 * one (lookalike.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>
#include "names.h"
#include "utf8.h"

#define PASSWORD_MIN 8

/* Letters of the scripts an IM user base writes names in: Latin, Greek,
 * Cyrillic, Armenian, Hebrew, Arabic, Devanagari, Thai, CJK, kana, Hangul. */
static int is_letter(unsigned c)
{
    if (c < 0x80)
        return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_';
    return (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) ||
           (c >= 0x370 && c <= 0x3FF && c != 0x37E && c != 0x387) ||
           (c >= 0x400 && c <= 0x52F) || (c >= 0x531 && c <= 0x587) ||
           (c >= 0x5D0 && c <= 0x5EA) || (c >= 0x620 && c <= 0x64A) ||
           (c >= 0x904 && c <= 0x939) || (c >= 0xE01 && c <= 0xE30) ||
           (c >= 0x3040 && c <= 0x30FF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x20000 && c <= 0x2A6DF);
}

/* Controls (C0, DEL, C1), the Unicode spaces, and the characters that show
 * nothing (zero-width and direction marks, the soft hyphen, the Hangul
 * fillers): names must not hide them, or `a@example.com` and
 * `a<U+200B>@example.com` would be two accounts that read the same.
 * (Variation selectors and tags are left to emoji, which use them.) */
static int is_blank_or_control(unsigned c)
{
    return c <= 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD || c == 0x34F || c == 0x61C ||
           c == 0x115F || c == 0x1160 || c == 0x1680 || c == 0x180E ||
           (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
           (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0x3164 || c == 0xFEFF ||
           c == 0xFFA0;
}

/* The scripts whose letters look alike (Latin 'a', Cyrillic 'а', Greek
 * 'α'; Latin 'D' and Cherokee 'Ꭰ'): a new username takes its letters from
 * one of them at most. Others mix freely (Latin with Han and kana). */
static const char *const look_alike[] = {"Latin", "Greek", "Cyrillic", "Armenian", "Cherokee", "Coptic"};

static int look_alike_script(uint32_t c)
{
    const uc_script_t *sc = c < 0x80 ? NULL : uc_script(c);
    if (c < 0x80)
        return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ? 0 : -1;
    for (size_t i = 0; sc && i < sizeof look_alike / sizeof look_alike[0]; i++)
        if (strcmp(sc->name, look_alike[i]) == 0)
            return (int)i;
    return -1;
}

/* A login name of a phone's shape: a '+' first or not, then digits,
 * spaces, '-' and brackets only. */
static int phone_shaped(const char *s, size_t len)
{
    size_t i = len && s[0] == '+';
    while (i < len && ((s[i] >= '0' && s[i] <= '9') || (s[i] && strchr(" -()", s[i]))))
        i++;
    return i == len;
}

/* len bytes of in, ASCII letters lower-cased with `lower`, and a NUL. */
static void copy_ascii_case(char *out, const char *in, size_t len, int lower)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)in[i];
        out[i] = (char)(lower && b >= 'A' && b <= 'Z' ? b + 32 : b);
    }
    out[len] = '\0';
}

/* A name's code points at most (NAMES_EMAIL_MAX bytes), with room for the
 * width mapping, which makes two of a few halfwidth forms. */
#define POINTS_MAX (2 * NAMES_EMAIL_MAX + 8)

/* The canonical form of in (len bytes) into out (outlen bytes, NUL
 * added): the width mapping, then NFC, and for an EMAIL lower case. ASCII
 * is its own canonical form (but for lower case), so most names never
 * leave the first loop. 0, or -1 with `why`. */
enum { NAME, EMAIL, LOGIN_NAME_ANY };

static int canonical(const char *in, size_t len, int what, char *out, size_t outlen,
                     const char **why)
{
    static const char *const msg[3][3] = {
        {"name is not valid UTF-8", "name is longer than 128 bytes", "out of memory"},
        {"email is not valid UTF-8", "email is longer than 254 bytes", "out of memory"},
        {"login_name is not valid UTF-8", "login_name is too long", "out of memory"}};
    uint32_t points[POINTS_MAX], done[POINTS_MAX], c;
    size_t n = 0, i, step, o = 0, m = POINTS_MAX;
    int ascii = 1, lower = what == EMAIL;

    for (i = 0; i < len; i += step) {
        if (!(step = utf8_next((const unsigned char *)in + i, len - i, &c)) || c == 0) {
            *why = msg[what][0];
            return -1;
        }
        ascii &= c < 0x80;
    }
    if (ascii) {
        if (len >= outlen) { *why = msg[what][1]; return -1; }
        copy_ascii_case(out, in, len, lower);
        return 0;
    }
    for (i = 0; i < len; i += step) {
        ucs4_t d[UC_DECOMPOSITION_MAX_LENGTH];
        int tag, k = 0;
        step = utf8_next((const unsigned char *)in + i, len - i, &c);
        if (c >= 0xFF00 && c <= 0xFFEF && (k = uc_decomposition(c, &tag, d)) > 0 &&
            (tag == UC_DECOMP_WIDE || tag == UC_DECOMP_NARROW)) {
            if (n + (size_t)k > POINTS_MAX) { *why = msg[what][1]; return -1; }
            memcpy(points + n, d, (size_t)k * sizeof *d);
            n += (size_t)k;
        } else {
            if (n == POINTS_MAX) { *why = msg[what][1]; return -1; }
            points[n++] = c;
        }
    }
    uint32_t *r = lower ? u32_tolower(points, n, NULL, UNINORM_NFC, done, &m)
                        : u32_normalize(UNINORM_NFC, points, n, done, &m);
    if (!r) { *why = msg[what][2]; return -1; }
    for (i = 0; i < m; i++) {
        char u[4];
        int l = u8_uctomb((uint8_t *)u, r[i], 4);
        if (l <= 0 || o + (size_t)l >= outlen)
            break;
        memcpy(out + o, u, (size_t)l);
        o += (size_t)l;
    }
    if (r != done)
        free(r);
    if (i < m) { *why = msg[what][1]; return -1; }
    out[o] = '\0';
    return 0;
}

/* The rules of a username in its canonical form; `creating`: the rules of
 * a new one too (an account made before them still logs in). */
static int username_rules(const char *name, int creating, const char **why)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t len = strlen(name), n;
    int has_letter = 0, script = -1;
    uint32_t c;

    if (len == 0) { *why = "name is empty"; return -1; }
    if (len > STORE_NAME_MAX) { *why = "name is longer than 128 bytes"; return -1; }
    for (size_t i = 0; i < len; i += n) {
        if (!(n = utf8_next(s + i, len - i, &c))) { *why = "name is not valid UTF-8"; return -1; }
        if (is_blank_or_control(c)) { *why = "name contains a space, a control or an invisible character"; return -1; }
        if (c == '@') { *why = "name must not contain '@' (that makes it an email)"; return -1; }
        if (is_letter(c))
            has_letter = 1;
        int sc = creating ? look_alike_script(c) : -1;
        if (sc >= 0 && script >= 0 && sc != script) {
            static __thread char msg[128];   /* read at once by the caller */
            snprintf(msg, sizeof msg, "name mixes %s and %s letters, which look alike: "
                     "take its letters from one of them", look_alike[script < sc ? script : sc],
                     look_alike[script < sc ? sc : script]);
            *why = msg;
            return -1;
        }
        if (sc >= 0)
            script = sc;
    }
    if (!has_letter) { *why = "name needs at least one letter, '_' or CJK character"; return -1; }
    return 0;
}

int names_normalize_username(const char *in, char *out, size_t outlen, const char **why)
{
    if (canonical(in, strlen(in), NAME, out, outlen, why) != 0)
        return -1;
    return username_rules(out, 1, why);
}

int names_normalize_phone(const char *in, char *out, size_t outlen, const char **why)
{
    size_t o = 0, digits = 0;
    for (const char *p = in; *p; p++) {
        if (*p == '+' && o == 0) {
            if (o + 1 >= outlen) break;
            out[o++] = '+';
        } else if (*p >= '0' && *p <= '9') {
            if (o + 1 >= outlen || digits >= NAMES_PHONE_MAX) { *why = "phone has more than 20 digits"; return -1; }
            out[o++] = *p, digits++;
        } else if (!strchr(" -()", *p)) {
            *why = "phone may hold only digits, a leading '+', spaces, '-' and brackets";
            return -1;
        }
    }
    out[o] = '\0';
    if (digits < 3) { *why = "phone needs at least 3 digits"; return -1; }
    return 0;
}

int names_normalize_email(const char *in, char *out, size_t outlen, const char **why)
{
    char e[NAMES_EMAIL_MAX + 1];
    if (strlen(in) > NAMES_EMAIL_MAX) { *why = "email is longer than 254 bytes"; return -1; }
    if (canonical(in, strlen(in), EMAIL, e, sizeof e, why) != 0)
        return -1;
    size_t len = strlen(e);
    const char *at = strchr(e, '@');
    const char *dom = at ? at + 1 : NULL;
    if (!at || at == e || !*dom || strchr(dom, '@') || !strchr(dom, '.') || dom[0] == '.' ||
        e[len - 1] == '.' || strstr(dom, "..")) {
        *why = "email must look like name@example.com";
        return -1;
    }
    for (size_t i = 0, n; i < len; i += n) {
        uint32_t c;
        if (!(n = utf8_next((const unsigned char *)e + i, len - i, &c))) {
            *why = "email is not valid UTF-8";
            return -1;
        }
        if (is_blank_or_control(c)) {
            *why = "email contains a space, a control or an invisible character";
            return -1;
        }
    }
    if (len >= outlen) { *why = "email is longer than 254 bytes"; return -1; }
    memcpy(out, e, len + 1);
    return 0;
}

int names_check_password(const char *pw, size_t len, const char **why)
{
    if (len < PASSWORD_MIN) { *why = "password must be at least 8 characters"; return -1; }
    if (len > CRYPTO_PASSWORD_MAX) { *why = "password must be at most 1024 bytes"; return -1; }
    if (memchr(pw, '\0', len)) { *why = "password must not contain a NUL byte"; return -1; }
    return 0;
}

/* The kind is told from the canonical form (width mapped: a fullwidth
 * '＠' makes an email, fullwidth digits a phone). */
int names_classify(const char *in, size_t len, login_kind *kind, char *out, size_t outlen,
                   const char **why)
{
    char c[NAMES_EMAIL_MAX + 2];
    if (len == 0 || len >= outlen || len >= sizeof c || memchr(in, '\0', len)) {
        *why = len == 0 ? "login_name is empty" : "login_name is too long or holds a NUL byte";
        return -1;
    }
    if (canonical(in, len, LOGIN_NAME_ANY, c, sizeof c, why) != 0)
        return -1;
    len = strlen(c);
    if (strchr(c, '@')) {
        *kind = LOGIN_EMAIL;
        return names_normalize_email(c, out, outlen, why);
    }
    if (phone_shaped(c, len)) {
        *kind = LOGIN_PHONE;
        return names_normalize_phone(c, out, outlen, why);
    }
    *kind = LOGIN_NAME;
    if (len >= outlen) {
        *why = "login_name is too long";
        return -1;
    }
    memcpy(out, c, len + 1);
    return username_rules(out, 0, why);
}

/* The rules before canonical names: '@' made an email (ASCII lower-cased),
 * ASCII digits a phone (as now), anything else a name, its bytes as given. */
int names_legacy_key(const char *in, size_t len, login_kind kind, const char *key,
                     login_kind *old_kind, char *out, size_t outlen)
{
    if (len == 0 || len >= outlen || memchr(in, '\0', len))
        return 0;
    if (memchr(in, '@', len))
        *old_kind = LOGIN_EMAIL;
    else if (phone_shaped(in, len))
        return 0;   /* a phone: its key is what it always was */
    else
        *old_kind = LOGIN_NAME;
    copy_ascii_case(out, in, len, *old_kind == LOGIN_EMAIL);
    return *old_kind != kind || strcmp(out, key) != 0;
}
