/*
 * Example plugin in C: checksums and base64.
 *
 * `sha256_files` hashes every file under the read-only folder granted as
 * /data (or a folder in it), like `sha256sum`, reporting progress file by
 * file and stopping early when cancelled. `base64_encode` and
 * `base64_decode` convert text; input that is not base64 is refused as
 * invalid arguments.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "toolhost.h"

#define ROOT "/data"
#define MAX_FILES 10000
#define MAX_UPDATES 20
#define MAX_DELAY_MS 1000

/* --- SHA-256 (FIPS 180-4) --- */

typedef struct {
    uint32_t state[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t used;
} sha256_ctx;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->state[0], b = c->state[1], cc = c->state[2], d = c->state[3];
    uint32_t e = c->state[4], f = c->state[5], g = c->state[6], h = c->state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }
    c->state[0] += a;
    c->state[1] += b;
    c->state[2] += cc;
    c->state[3] += d;
    c->state[4] += e;
    c->state[5] += f;
    c->state[6] += g;
    c->state[7] += h;
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->state, init, sizeof(init));
    c->bytes = 0;
    c->used = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n) {
    c->bytes += n;
    while (n > 0) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used == 64) {
            sha256_block(c, c->block);
            c->used = 0;
        }
    }
}

/* The digest as 64 hex digits and a NUL. */
static void sha256_hex(sha256_ctx *c, char out[65]) {
    uint64_t bits = c->bytes * 8;
    uint8_t pad = 0x80;
    sha256_update(c, &pad, 1);
    pad = 0;
    while (c->used != 56) sha256_update(c, &pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++) snprintf(out + 8 * i, 9, "%08x", c->state[i]);
}

/* --- Walking the granted folder --- */

typedef struct {
    char **paths; /* relative to ROOT */
    size_t len, cap;
    size_t found; /* including those past MAX_FILES */
} file_list;

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file under ROOT/rel, sorted; unreadable subfolders are
 * skipped. Fails (errno set) only when the starting folder cannot be read. */
static int list_files(const char *rel, file_list *out) {
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s%s%s", ROOT, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof(*names));
            if (!names) abort();
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        char path[4096], full[4096];
        snprintf(path, sizeof(path), "%s%s%s", rel, rel[0] ? "/" : "", names[i]);
        snprintf(full, sizeof(full), "%s/%s", ROOT, path);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            list_files(path, out);
        } else if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
            out->found++;
            if (out->len < MAX_FILES) {
                if (out->len == out->cap) {
                    out->cap = out->cap ? out->cap * 2 : 32;
                    out->paths = realloc(out->paths, out->cap * sizeof(*out->paths));
                    if (!out->paths) abort();
                }
                out->paths[out->len++] = strdup(path);
            }
        }
        free(names[i]);
    }
    free(names);
    return 0;
}

/* The SHA-256 of ROOT/rel and its size; -1 with errno when unreadable. */
static int hash_file(const char *rel, char hex[65], uint64_t *size) {
    char full[4096];
    snprintf(full, sizeof(full), "%s/%s", ROOT, rel);
    FILE *f = fopen(full, "rb");
    if (!f) return -1;
    sha256_ctx c;
    sha256_init(&c);
    uint8_t buf[16384];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0) sha256_update(&c, buf, got);
    int failed = ferror(f);
    fclose(f);
    if (failed) return -1;
    *size = c.bytes;
    sha256_hex(&c, hex);
    return 0;
}

/* `dir` relative to ROOT, without a leading "/data" or slashes (to be
 * freed); NULL if it climbs out with "..". */
static char *relative_dir(const char *dir) {
    size_t root = strlen(ROOT);
    if (strncmp(dir, ROOT, root) == 0 && (dir[root] == '/' || dir[root] == '\0')) dir += root;
    while (*dir == '/') dir++;
    char *copy = strdup(dir);
    size_t len = strlen(copy);
    while (len > 0 && copy[len - 1] == '/') copy[--len] = '\0';
    for (char *part = copy; part; part = strchr(part, '/') ? strchr(part, '/') + 1 : NULL) {
        if (strncmp(part, "..", 2) == 0 && (part[2] == '/' || part[2] == '\0')) {
            free(copy);
            return NULL;
        }
    }
    return copy;
}

/* Sleeps `ms` in short steps; true if the call was cancelled meanwhile. */
static bool pause_ms(int64_t ms) {
    for (; ms > 0; ms -= 20) {
        if (th_cancelled()) return true;
        th_sleep_ms(ms < 20 ? (uint32_t)ms : 20);
    }
    return th_cancelled();
}

static int sha256_files(const th_args *args, th_result *result) {
    int64_t delay = th_arg_int(args, "delay_ms", 0);
    if (delay < 0 || delay > MAX_DELAY_MS)
        return th_invalid_arguments(result, "delay_ms must be between 0 and %d", MAX_DELAY_MS);
    char *rel = relative_dir(th_arg_str(args, "dir", ""));
    if (!rel) return th_invalid_arguments(result, "dir must stay inside " ROOT ": `..` is not allowed");

    file_list files = {0};
    if (list_files(rel, &files) != 0) {
        int e = errno;
        th_buf dir = {0};
        th_buf_printf(&dir, "%s%s%s", ROOT, rel[0] ? "/" : "", rel);
        free(rel);
        if (e == ENOENT)
            th_failed(result, "%s does not exist", dir.data);
        else
            th_failed(result, "cannot read %s: %s (is " ROOT " granted in the plugin manifest?)",
                      dir.data, strerror(e));
        th_buf_free(&dir);
        return -1;
    }
    size_t step = (files.len + MAX_UPDATES - 1) / MAX_UPDATES;
    if (step == 0) step = 1;

    th_buf text = {0}, data = {0};
    th_buf_printf(&data, "{\"files\": [");
    uint64_t total = 0;
    size_t done = 0, hashed = 0, unreadable = 0;
    bool stopped = false;
    for (size_t i = 0; i < files.len; i++) {
        if (th_cancelled()) {
            stopped = true;
            break;
        }
        char hex[65];
        uint64_t size = 0;
        const char *path = files.paths[i];
        if (hash_file(path, hex, &size) == 0) {
            th_buf_printf(&text, "%s  %s\n", hex, path);
            th_buf_printf(&data, "%s{\"path\": ", hashed++ ? ", " : "");
            th_buf_json_string(&data, path, strlen(path));
            th_buf_printf(&data, ", \"sha256\": \"%s\", \"bytes\": %llu}", hex, (unsigned long long)size);
            total += size;
        } else {
            th_log(TH_WARN, "cannot read %s: %s", path, strerror(errno));
            unreadable++;
        }
        done++;
        if (done < files.len && done % step == 0)
            th_update("hashed %zu of %zu files: %s", done, files.len, path);
        if (done < files.len && delay > 0 && pause_ms(delay)) {
            stopped = true;
            break;
        }
    }
    th_buf_printf(&data, "], \"total_bytes\": %llu, \"files_found\": %zu, \"unreadable\": %zu, "
                         "\"cancelled\": %s}",
                  (unsigned long long)total, files.found, unreadable, stopped ? "true" : "false");
    if (stopped) th_buf_printf(&text, "cancelled after %zu of %zu files.\n", done, files.len);
    if (files.found > files.len)
        th_buf_printf(&text, "Only the first %d of %zu files were hashed.\n", MAX_FILES, files.found);
    if (files.len == 0) th_buf_printf(&text, "There are no files in %s%s%s.\n", ROOT, rel[0] ? "/" : "", rel);
    free(rel);
    for (size_t i = 0; i < files.len; i++) free(files.paths[i]);
    free(files.paths);
    th_text_buf(result, &text);
    return th_data_buf(result, &data);
}

/* --- base64 (RFC 4648, with padding) --- */

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int base64_encode(const th_args *args, th_result *result) {
    const char *in;
    size_t len;
    if (!th_arg_string(args, "text", &in, &len)) return th_invalid_arguments(result, "text is missing");
    th_buf out = {0};
    const uint8_t *p = (const uint8_t *)in;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        char quad[4] = {ALPHABET[v >> 18 & 63], ALPHABET[v >> 12 & 63],
                        i + 1 < len ? ALPHABET[v >> 6 & 63] : '=', i + 2 < len ? ALPHABET[v & 63] : '='};
        th_buf_append(&out, quad, 4);
    }
    if (!out.data) th_buf_append(&out, "", 0);
    return th_text_buf(result, &out);
}

/* Whether `s` is well-formed UTF-8 (no overlongs, surrogates or NUL). */
static bool valid_utf8(const uint8_t *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || c == 0 || i + n > len) return false;
        uint32_t cp = n == 1 ? c : c & (0x7f >> n);
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return false;
        i += n;
    }
    return true;
}

static int base64_decode(const th_args *args, th_result *result) {
    const char *in = th_arg_str(args, "base64", "");
    th_buf out = {0};
    uint32_t acc = 0;
    int bits = 0;
    size_t chars = 0, pad = 0;
    for (const char *p = in; *p; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') continue;
        if (*p == '=') {
            pad++;
            chars++;
            continue;
        }
        const char *at = strchr(ALPHABET, *p);
        if (!at || pad > 0) {
            th_buf_free(&out);
            return th_invalid_arguments(result, "not base64: unexpected '%c' at offset %zu",
                                        *p, (size_t)(p - in));
        }
        acc = acc << 6 | (uint32_t)(at - ALPHABET);
        bits += 6;
        chars++;
        if (bits >= 8) {
            bits -= 8;
            char byte = (char)(acc >> bits & 0xff);
            th_buf_append(&out, &byte, 1);
        }
    }
    if (chars % 4 != 0 || pad > 2) {
        th_buf_free(&out);
        return th_invalid_arguments(result, "not base64: %zu characters is not a multiple of 4",
                                    chars);
    }
    if (!valid_utf8((const uint8_t *)out.data, out.len)) {
        th_buf_free(&out);
        return th_invalid_arguments(result, "the base64 decodes to bytes that are not UTF-8 text");
    }
    if (!out.data) th_buf_append(&out, "", 0);
    return th_text_buf(result, &out);
}

static const th_tool tools[] = {
    {
        .name = "sha256_files",
        .description = "SHA-256 checksums of the files under /data (or a folder in it), one "
                       "`digest  path` line each, like sha256sum. Runs in the background and "
                       "reports progress; can be cancelled, and then returns what it has so far.",
        .input_schema =
            /* Portable to OpenAI strict mode and Gemini: no `default` keyword,
               `required` given, and optional arguments that also take null,
               which th_arg_* reads as absent. */
            "{\"type\": \"object\", \"properties\": {"
            "\"dir\": {\"type\": [\"string\", \"null\"], \"description\": \"A folder relative "
            "to /data; the whole of /data when left out.\"}, "
            "\"delay_ms\": {\"type\": [\"integer\", \"null\"], \"minimum\": 0, \"maximum\": "
            "1000, \"description\": \"An artificial pause after each file, so progress is visible "
            "in demos. Default: 0.\"}}, \"required\": []}",
        .output_schema =
            "{\"type\": \"object\", \"properties\": {"
            "\"files\": {\"type\": \"array\", \"items\": {\"type\": \"object\", \"properties\": {"
            "\"path\": {\"type\": \"string\"}, \"sha256\": {\"type\": \"string\"}, "
            "\"bytes\": {\"type\": \"integer\"}}, \"required\": [\"path\", \"sha256\", \"bytes\"]}}, "
            "\"total_bytes\": {\"type\": \"integer\"}, \"files_found\": {\"type\": \"integer\"}, "
            "\"unreadable\": {\"type\": \"integer\"}, \"cancelled\": {\"type\": \"boolean\"}}, "
            "\"required\": [\"files\", \"total_bytes\", \"files_found\", \"unreadable\", "
            "\"cancelled\"]}",
        .on_duplicate = TH_REJECT,
        .duplicate_scope = TH_SCOPE_NAME_AND_ARGUMENTS,
        .cancellable = true,
        .run = sha256_files,
    },
    {
        .name = "base64_encode",
        .description = "Encodes a text (its UTF-8 bytes) as base64.",
        .input_schema = "{\"type\": \"object\", \"properties\": {\"text\": {\"type\": "
                        "\"string\"}}, \"required\": [\"text\"]}",
        .run = base64_encode,
    },
    {
        .name = "base64_decode",
        .description = "Decodes base64 into the UTF-8 text it holds.",
        .input_schema = "{\"type\": \"object\", \"properties\": {\"base64\": {\"type\": "
                        "\"string\"}}, \"required\": [\"base64\"]}",
        .run = base64_decode,
    },
};
TOOLHOST_PLUGIN(tools)
