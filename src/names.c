/* names.c - login names and password policy.
 *
 * A username must hold at least one letter, '_' or CJK character, so a
 * login name of digits alone is always a phone number and never ambiguous.
 * Names compare case-sensitively; emails are lower-cased; phones keep only
 * digits and a leading '+'. */
#include <string.h>
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

int names_check_username(const char *name, const char **why)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t len = strlen(name), n;
    int has_letter = 0;
    uint32_t c;

    if (len == 0) { *why = "name is empty"; return -1; }
    if (len > STORE_NAME_MAX) { *why = "name is longer than 128 bytes"; return -1; }
    for (size_t i = 0; i < len; i += n) {
        if (!(n = utf8_next(s + i, len - i, &c))) { *why = "name is not valid UTF-8"; return -1; }
        if (is_blank_or_control(c)) { *why = "name contains a space, a control or an invisible character"; return -1; }
        if (c == '@') { *why = "name must not contain '@' (that makes it an email)"; return -1; }
        if (is_letter(c))
            has_letter = 1;
    }
    if (!has_letter) { *why = "name needs at least one letter, '_' or CJK character"; return -1; }
    return 0;
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
    size_t len = strlen(in);
    const char *at = strchr(in, '@');
    if (len > NAMES_EMAIL_MAX || len >= outlen) { *why = "email is longer than 254 bytes"; return -1; }
    const char *dom = at ? at + 1 : NULL;
    if (!at || at == in || !*dom || strchr(dom, '@') || !strchr(dom, '.') || dom[0] == '.' ||
        in[len - 1] == '.' || strstr(dom, "..")) {
        *why = "email must look like name@example.com";
        return -1;
    }
    for (size_t i = 0, n; i < len; i += n) {
        uint32_t c;
        if (!(n = utf8_next((const unsigned char *)in + i, len - i, &c))) {
            *why = "email is not valid UTF-8";
            return -1;
        }
        if (is_blank_or_control(c)) {
            *why = "email contains a space, a control or an invisible character";
            return -1;
        }
    }
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    return 0;
}

int names_check_password(const char *pw, size_t len, const char **why)
{
    if (len < PASSWORD_MIN) { *why = "password must be at least 8 characters"; return -1; }
    if (len > CRYPTO_PASSWORD_MAX) { *why = "password must be at most 1024 bytes"; return -1; }
    if (memchr(pw, '\0', len)) { *why = "password must not contain a NUL byte"; return -1; }
    return 0;
}

int names_classify(const char *in, size_t len, login_kind *kind, char *out, size_t outlen,
                   const char **why)
{
    size_t i = 0;
    if (len == 0 || len >= outlen || memchr(in, '\0', len)) {
        *why = len == 0 ? "login_name is empty" : "login_name is too long or holds a NUL byte";
        return -1;
    }
    memcpy(out, in, len);
    out[len] = '\0';
    if (memchr(in, '@', len)) {
        *kind = LOGIN_EMAIL;
        return names_normalize_email(out, out, outlen, why);
    }
    if (out[0] == '+')
        i = 1;
    while (i < len && ((out[i] >= '0' && out[i] <= '9') || strchr(" -()", out[i])))
        i++;
    if (i == len) {
        *kind = LOGIN_PHONE;
        return names_normalize_phone(out, out, outlen, why);
    }
    *kind = LOGIN_NAME;
    return names_check_username(out, why);
}
