/*
 * The C helper library of toolhost plugins: implements the exports of
 * wit/plugin.wit (describe, call) over the plugin's th_tools, and the
 * conveniences declared in toolhost.h.
 */
#include "toolhost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin.h"

struct th_args {
    const char *json;
    size_t len;
};

struct th_result {
    th_buf text;
    th_buf data;
    bool has_text;
    bool has_data;
    bool failed;
    uint8_t error_tag;
    th_buf error;
};

/* --- Memory handed out for the length of a call --- */

typedef struct allocation {
    struct allocation *next;
} allocation;

static allocation *call_memory;

static void *oom(void) {
    fputs("toolhost.c: out of memory\n", stderr);
    abort();
}

/* `size` bytes that live until the call returns. */
static void *call_alloc(size_t size) {
    allocation *a = malloc(sizeof(allocation) + size);
    if (!a) return oom();
    a->next = call_memory;
    call_memory = a;
    return a + 1;
}

static void free_call_memory(void) {
    while (call_memory) {
        allocation *next = call_memory->next;
        free(call_memory);
        call_memory = next;
    }
}

/* --- th_buf --- */

static void reserve(th_buf *buf, size_t more) {
    if (buf->len + more + 1 <= buf->cap) return;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < buf->len + more + 1) cap *= 2;
    char *data = realloc(buf->data, cap);
    if (!data) oom();
    buf->data = data;
    buf->cap = cap;
}

void th_buf_append(th_buf *buf, const char *bytes, size_t len) {
    reserve(buf, len);
    memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

static void buf_vprintf(th_buf *buf, const char *format, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, format, copy);
    va_end(copy);
    if (n < 0) return;
    reserve(buf, (size_t)n);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, format, ap);
    buf->len += (size_t)n;
}

void th_buf_printf(th_buf *buf, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    buf_vprintf(buf, format, ap);
    va_end(ap);
}

void th_buf_json_string(th_buf *buf, const char *s, size_t len) {
    th_buf_append(buf, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': th_buf_append(buf, "\\\"", 2); break;
        case '\\': th_buf_append(buf, "\\\\", 2); break;
        case '\n': th_buf_append(buf, "\\n", 2); break;
        case '\r': th_buf_append(buf, "\\r", 2); break;
        case '\t': th_buf_append(buf, "\\t", 2); break;
        default:
            if (c < 0x20)
                th_buf_printf(buf, "\\u%04x", c);
            else
                th_buf_append(buf, (const char *)&c, 1);
        }
    }
    th_buf_append(buf, "\"", 1);
}

void th_buf_free(th_buf *buf) {
    free(buf->data);
    *buf = (th_buf){0};
}

/* --- Reading the arguments: a JSON object the host has validated --- */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Past the string that starts at `p` (at its opening quote). */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return end;
}

/* Past the value that starts at `p`. */
static const char *skip_value(const char *p, const char *end) {
    if (p >= end) return end;
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\t' && *p != '\r')
        p++;
    return p;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (unsigned)(c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0');
    }
    return v;
}

static void put_utf8(th_buf *out, unsigned cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | cp >> 6);
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12);
        b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18);
        b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    th_buf_append(out, b, n);
}

/* Decodes the JSON string at `p` into `out`. */
static void decode_string(const char *p, const char *end, th_buf *out) {
    out->len = 0;
    reserve(out, 0);
    out->data[0] = '\0';
    for (p++; p < end && *p != '"'; p++) {
        if (*p != '\\') {
            th_buf_append(out, p, 1);
            continue;
        }
        if (++p >= end) break;
        switch (*p) {
        case 'n': th_buf_append(out, "\n", 1); break;
        case 't': th_buf_append(out, "\t", 1); break;
        case 'r': th_buf_append(out, "\r", 1); break;
        case 'b': th_buf_append(out, "\b", 1); break;
        case 'f': th_buf_append(out, "\f", 1); break;
        case 'u': {
            if (end - p < 5) return;
            unsigned cp = hex4(p + 1);
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && end - p >= 7 && p[1] == '\\' && p[2] == 'u') {
                unsigned low = hex4(p + 3);
                if (low >= 0xdc00 && low < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    p += 6;
                }
            }
            put_utf8(out, cp);
            break;
        }
        default: th_buf_append(out, p, 1); /* \" \\ \/ */
        }
    }
}

/* The start of `key`'s value in the top-level object, or NULL. */
static const char *find(const th_args *args, const char *key) {
    const char *p = args->json, *end = args->json + args->len;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return NULL;
    p++;
    size_t key_len = strlen(key);
    th_buf name = {0};
    const char *found = NULL;
    while (!found) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"') break;
        const char *after = skip_string(p, end);
        decode_string(p, after, &name);
        p = skip_ws(after, end);
        if (p >= end || *p != ':') break;
        p = skip_ws(p + 1, end);
        if (name.len == key_len && memcmp(name.data, key, key_len) == 0)
            found = p;
        p = skip_ws(skip_value(p, end), end);
        if (p < end && *p == ',') p++;
    }
    th_buf_free(&name);
    if (found && end - found >= 4 && memcmp(found, "null", 4) == 0) return NULL;
    return found;
}

bool th_arg_present(const th_args *args, const char *key) {
    return find(args, key) != NULL;
}

bool th_arg_string(const th_args *args, const char *key, const char **value, size_t *len) {
    const char *p = find(args, key);
    const char *end = args->json + args->len;
    if (!p || *p != '"') return false;
    th_buf out = {0};
    decode_string(p, skip_string(p, end), &out);
    char *copy = call_alloc(out.len + 1);
    memcpy(copy, out.data, out.len + 1);
    if (value) *value = copy;
    if (len) *len = out.len;
    th_buf_free(&out);
    return true;
}

const char *th_arg_str(const th_args *args, const char *key, const char *fallback) {
    const char *value;
    return th_arg_string(args, key, &value, NULL) ? value : fallback;
}

double th_arg_number(const th_args *args, const char *key, double fallback) {
    const char *p = find(args, key);
    if (!p) return fallback;
    char *end;
    double v = strtod(p, &end);
    return end == p ? fallback : v;
}

int64_t th_arg_int(const th_args *args, const char *key, int64_t fallback) {
    const char *p = find(args, key);
    if (!p) return fallback;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p) return fallback;
    /* JSON Schema counts 2.0 and 2e3 as integers. */
    if (*end == '.' || *end == 'e' || *end == 'E') return (int64_t)strtod(p, NULL);
    return (int64_t)v;
}

bool th_arg_bool(const th_args *args, const char *key, bool fallback) {
    const char *p = find(args, key);
    const char *end = args->json + args->len;
    if (p && end - p >= 4 && memcmp(p, "true", 4) == 0) return true;
    if (p && end - p >= 5 && memcmp(p, "false", 5) == 0) return false;
    return fallback;
}

const char *th_arg_json(const th_args *args, const char *key, size_t *len) {
    const char *p = find(args, key);
    if (!p) return NULL;
    size_t n = (size_t)(skip_value(p, args->json + args->len) - p);
    char *copy = call_alloc(n + 1);
    memcpy(copy, p, n);
    copy[n] = '\0';
    if (len) *len = n;
    return copy;
}

/* --- The answer --- */

/* Replaces the contents of `buf` and marks it set. */
static void set_part(th_buf *buf, bool *has, const char *format, va_list ap) {
    buf->len = 0;
    buf_vprintf(buf, format, ap);
    *has = true;
}

int th_text(th_result *result, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    set_part(&result->text, &result->has_text, format, ap);
    va_end(ap);
    return 0;
}

int th_data(th_result *result, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    set_part(&result->data, &result->has_data, format, ap);
    va_end(ap);
    return 0;
}

static void set_error(th_result *result, uint8_t tag, const char *format, va_list ap) {
    result->error.len = 0;
    buf_vprintf(&result->error, format, ap);
    result->failed = true;
    result->error_tag = tag;
}

int th_failed(th_result *result, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    set_error(result, TOOLHOST_PLUGIN_TYPES_TOOL_ERROR_FAILED, format, ap);
    va_end(ap);
    return -1;
}

int th_invalid_arguments(th_result *result, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    set_error(result, TOOLHOST_PLUGIN_TYPES_TOOL_ERROR_INVALID_ARGUMENTS, format, ap);
    va_end(ap);
    return -1;
}

static int take(th_buf *into, bool *has, th_buf *from) {
    th_buf_free(into);
    *into = *from;
    *from = (th_buf){0};
    if (!into->data) th_buf_append(into, "", 0);
    *has = true;
    return 0;
}

int th_text_buf(th_result *result, th_buf *buf) {
    return take(&result->text, &result->has_text, buf);
}

int th_data_buf(th_result *result, th_buf *buf) {
    return take(&result->data, &result->has_data, buf);
}

/* --- The host --- */

static void host_string(plugin_string_t *s, const th_buf *buf) {
    s->ptr = (uint8_t *)buf->data;
    s->len = buf->len;
}

void th_update(const char *format, ...) {
    th_buf msg = {0};
    va_list ap;
    va_start(ap, format);
    buf_vprintf(&msg, format, ap);
    va_end(ap);
    plugin_string_t s;
    host_string(&s, &msg);
    toolhost_plugin_host_update(&s);
    th_buf_free(&msg);
}

bool th_cancelled(void) {
    return toolhost_plugin_host_cancelled();
}

void th_sleep_ms(uint32_t ms) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

void th_log(th_log_level level, const char *format, ...) {
    th_buf msg = {0};
    va_list ap;
    va_start(ap, format);
    buf_vprintf(&msg, format, ap);
    va_end(ap);
    plugin_string_t s;
    host_string(&s, &msg);
    toolhost_plugin_host_log((toolhost_plugin_host_log_level_t)level, &s);
    th_buf_free(&msg);
}

static const char *call_string(const plugin_string_t *s) {
    char *copy = call_alloc(s->len + 1);
    memcpy(copy, s->ptr, s->len);
    copy[s->len] = '\0';
    return copy;
}

th_call_context th_call_info(void) {
    toolhost_plugin_host_call_context_t ctx;
    toolhost_plugin_host_call_info(&ctx);
    th_call_context info = {
        .call_id = call_string(&ctx.call_id),
        .session_id = call_string(&ctx.session_id),
        .tool = call_string(&ctx.tool),
    };
    toolhost_plugin_host_call_context_free(&ctx);
    return info;
}

/* --- The exports of wit/plugin.wit --- */

/* The host frees what describe and call return (their post-return), so
 * every string handed over is malloc'ed (plugin_string_dup). */

void exports_toolhost_plugin_tool_describe(exports_toolhost_plugin_tool_list_tool_spec_t *ret) {
    ret->len = th_tool_count;
    ret->ptr = calloc(th_tool_count ? th_tool_count : 1, sizeof(*ret->ptr));
    if (!ret->ptr) oom();
    for (size_t i = 0; i < th_tool_count; i++) {
        const th_tool *t = &th_tools[i];
        exports_toolhost_plugin_tool_tool_spec_t *spec = &ret->ptr[i];
        plugin_string_dup(&spec->name, t->name);
        plugin_string_dup(&spec->description, t->description ? t->description : "");
        plugin_string_dup(&spec->input_schema,
                          t->input_schema ? t->input_schema : "{\"type\": \"object\"}");
        spec->output_schema.is_some = t->output_schema != NULL;
        if (t->output_schema) plugin_string_dup(&spec->output_schema.val, t->output_schema);
        spec->on_duplicate = (toolhost_plugin_types_duplicate_policy_t)t->on_duplicate;
        spec->duplicate_scope = (toolhost_plugin_types_duplicate_scope_t)t->duplicate_scope;
        spec->cancellable = t->cancellable;
        spec->delivery = (toolhost_plugin_types_delivery_t)t->delivery;
    }
}

bool exports_toolhost_plugin_tool_call(plugin_string_t *name, plugin_string_t *arguments,
                                       exports_toolhost_plugin_tool_tool_output_t *ret,
                                       exports_toolhost_plugin_tool_tool_error_t *err) {
    const th_tool *tool = NULL;
    for (size_t i = 0; i < th_tool_count; i++) {
        if (strlen(th_tools[i].name) == name->len &&
            memcmp(th_tools[i].name, name->ptr, name->len) == 0)
            tool = &th_tools[i];
    }
    th_result result = {0};
    if (!tool) {
        th_failed(&result, "no tool named %.*s", (int)name->len, (const char *)name->ptr);
    } else {
        th_args args = {(const char *)arguments->ptr, arguments->len};
        if (tool->run(&args, &result) != 0 && !result.failed)
            th_failed(&result, "%s failed", tool->name);
    }
    plugin_string_free(name);
    plugin_string_free(arguments);
    free_call_memory();

    bool ok = !result.failed;
    if (ok) {
        ret->text.is_some = result.has_text;
        if (result.has_text) plugin_string_dup_n(&ret->text.val, result.text.data, result.text.len);
        ret->data.is_some = result.has_data;
        if (result.has_data) plugin_string_dup_n(&ret->data.val, result.data.data, result.data.len);
    } else {
        err->tag = result.error_tag;
        /* Both cases hold a string at the same place of the union. */
        plugin_string_dup_n(&err->val.failed, result.error.data ? result.error.data : "",
                            result.error.len);
    }
    th_buf_free(&result.text);
    th_buf_free(&result.data);
    th_buf_free(&result.error);
    return ok;
}
