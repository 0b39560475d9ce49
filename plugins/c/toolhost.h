/*
 * Write toolhost plugins in C: the conveniences of the Rust guest library
 * over the bindings that wit-bindgen's C generator makes of wit/plugin.wit
 * (tools/build-plugins generates them into target/c-bindings/).
 *
 * A plugin lists its tools, each with its JSON Schema and a function:
 *
 *     #include "toolhost.h"
 *
 *     static int hello(const th_args *args, th_result *result) {
 *         const char *name = th_arg_str(args, "name", "");
 *         if (name[0] == '\0')
 *             return th_invalid_arguments(result, "name must not be empty");
 *         return th_text(result, "Hello, %s!", name);
 *     }
 *
 *     static const th_tool tools[] = {
 *         {
 *             .name = "hello",
 *             .description = "Greets someone.",
 *             .input_schema = "{\"type\": \"object\", \"properties\": "
 *                             "{\"name\": {\"type\": \"string\"}}, \"required\": [\"name\"]}",
 *             .run = hello,
 *         },
 *     };
 *     TOOLHOST_PLUGIN(tools)
 *
 * The fields left out take the defaults of the Rust library's `spec`:
 * duplicates allowed (by name), not cancellable, conversational delivery.
 *
 * A tool function returns 0 after setting its answer with th_text and/or
 * th_data (or none: an empty result), or returns th_failed(...) or
 * th_invalid_arguments(...), which the model reads as a tool error. A crash
 * (abort, a trap) reaches the model as a short generic message.
 *
 * The arguments arrive validated against the schema. Strings that the
 * helper hands out (arguments, call info) live until the call returns.
 */
#ifndef TOOLHOST_H
#define TOOLHOST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The values are those of the WIT enums. */
typedef enum {
    TH_ALLOW = 0,
    TH_REJECT = 1,
    TH_REPLACE = 2,
    TH_CONFIRM = 3,
    TH_QUEUE = 4,
} th_duplicate_policy;

typedef enum {
    TH_SCOPE_NAME = 0,
    TH_SCOPE_NAME_AND_ARGUMENTS = 1,
} th_duplicate_scope;

typedef enum {
    TH_CONVERSATIONAL = 0,
    TH_FIRE_AND_FORGET = 1,
} th_delivery;

typedef enum {
    TH_TRACE = 0,
    TH_DEBUG = 1,
    TH_INFO = 2,
    TH_WARN = 3,
    TH_ERROR = 4,
} th_log_level;

/* The arguments of a call: a JSON object. */
typedef struct th_args th_args;
/* The answer of a call, set by th_text, th_data, th_failed, ... */
typedef struct th_result th_result;

typedef int (*th_run)(const th_args *args, th_result *result);

typedef struct {
    const char *name;
    const char *description;
    const char *input_schema;  /* JSON Schema of the arguments */
    const char *output_schema; /* JSON Schema of the data, or NULL */
    th_duplicate_policy on_duplicate;
    th_duplicate_scope duplicate_scope;
    bool cancellable;
    th_delivery delivery;
    th_run run;
} th_tool;

/* Declares the plugin's tools: TOOLHOST_PLUGIN(tools) after the array. */
#define TOOLHOST_PLUGIN(array)                 \
    const th_tool *const th_tools = (array);   \
    const size_t th_tool_count = sizeof(array) / sizeof((array)[0]);

extern const th_tool *const th_tools;
extern const size_t th_tool_count;

/* --- Arguments (top-level keys of the arguments object) --- */

/* Whether `key` is present (and not null). */
bool th_arg_present(const th_args *args, const char *key);
/* The string `key`, or `fallback` when absent or not a string. */
const char *th_arg_str(const th_args *args, const char *key, const char *fallback);
/* The string `key` and its length in bytes (it may hold NUL); false when absent. */
bool th_arg_string(const th_args *args, const char *key, const char **value, size_t *len);
/* The number `key` (2.0 counts as 2), or `fallback`. */
int64_t th_arg_int(const th_args *args, const char *key, int64_t fallback);
double th_arg_number(const th_args *args, const char *key, double fallback);
bool th_arg_bool(const th_args *args, const char *key, bool fallback);
/* The JSON text of `key`'s value (objects, arrays, ...), or NULL. */
const char *th_arg_json(const th_args *args, const char *key, size_t *len);

/* --- The answer --- */

/* Text for the model, printf-style. Returns 0. */
int th_text(th_result *result, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Structured data: JSON text, printf-style. Returns 0. */
int th_data(th_result *result, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* A tool error: the tool failed. Returns -1, to be returned by the tool. */
int th_failed(th_result *result, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* A tool error: the arguments are unusable. Returns -1. */
int th_invalid_arguments(th_result *result, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* A growing string, for building text or JSON piece by piece. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} th_buf;

void th_buf_printf(th_buf *buf, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void th_buf_append(th_buf *buf, const char *bytes, size_t len);
/* Appends `len` bytes of `s` as a quoted, escaped JSON string. */
void th_buf_json_string(th_buf *buf, const char *s, size_t len);
void th_buf_free(th_buf *buf);
/* Hand a buffer over as the text or the data; the buffer is emptied. */
int th_text_buf(th_result *result, th_buf *buf);
int th_data_buf(th_result *result, th_buf *buf);

/* --- The host --- */

/* Push a progress update into the conversation, printf-style. The first one
 * answers the call; the tool goes on in the background. */
void th_update(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* True once the call has been asked to stop: clean up and return. */
bool th_cancelled(void);
/* Sleeps `ms` milliseconds (a WASI clock wait, which a cancel can cut short). */
void th_sleep_ms(uint32_t ms);
/* A line in the host's log, tagged with the plugin, tool and call. */
void th_log(th_log_level level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct {
    const char *call_id;
    const char *session_id;
    const char *tool;
} th_call_context;

/* Who is calling: the ids of this call and its session. */
th_call_context th_call_info(void);

#ifdef __cplusplus
}
#endif

#endif
