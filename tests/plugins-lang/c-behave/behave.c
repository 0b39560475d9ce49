/*
 * Test plugin: the C helper library's conveniences, one tool each. The tool
 * names and answers match python-behave and js-behave, so the tests in
 * tests/languages.rs run the same checks on every language.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "toolhost.h"

#define NO_ARGS "{\"type\": \"object\"}"

static int word_count(const th_args *args, th_result *result) {
    const char *text;
    size_t len;
    if (!th_arg_string(args, "text", &text, &len))
        return th_invalid_arguments(result, "text is missing");
    size_t words = 0, lines = 0, chars = 0;
    bool in_word = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xc0) != 0x80) chars++; /* not a UTF-8 continuation byte */
        if (c == '\n') lines++;
        bool space = isspace(c);
        if (!space && !in_word) words++;
        in_word = !space;
    }
    if (len > 0 && text[len - 1] != '\n') lines++;
    th_text(result, "%zu words, %zu lines, %zu characters", words, lines, chars);
    return th_data(result, "{\"words\": %zu, \"lines\": %zu, \"chars\": %zu}", words, lines,
                   chars);
}

static int fail(const th_args *args, th_result *result) {
    (void)args;
    return th_failed(result, "it failed on purpose");
}

static int bad_args(const th_args *args, th_result *result) {
    int64_t n = th_arg_int(args, "n", 0);
    if (n % 2 != 0) return th_invalid_arguments(result, "n must be even");
    return th_text(result, "%lld is even", (long long)n);
}

static int crash(const th_args *args, th_result *result) {
    (void)args;
    (void)result;
    abort();
}

static int progress(const th_args *args, th_result *result) {
    int64_t n = th_arg_int(args, "n", 1);
    int64_t sleep_ms = th_arg_int(args, "sleep_ms", 0);
    for (int64_t i = 1; i <= n; i++) {
        if (th_cancelled())
            return th_text(result, "cancelled after %lld steps", (long long)(i - 1));
        th_update("step %lld of %lld", (long long)i, (long long)n);
        if (i < n) th_sleep_ms((uint32_t)sleep_ms);
    }
    return th_text(result, "done after %lld steps", (long long)n);
}

static int wait_cancel(const th_args *args, th_result *result) {
    (void)args;
    th_update("waiting for cancel");
    while (!th_cancelled()) th_sleep_ms(5);
    return th_text(result, "stopped on cancel");
}

static int info(const th_args *args, th_result *result) {
    (void)args;
    th_call_context ctx = th_call_info();
    th_log(TH_WARN, "info called as %s", ctx.call_id);
    th_buf data = {0};
    th_buf_printf(&data, "{\"call_id\": ");
    th_buf_json_string(&data, ctx.call_id, strlen(ctx.call_id));
    th_buf_printf(&data, ", \"session_id\": ");
    th_buf_json_string(&data, ctx.session_id, strlen(ctx.session_id));
    th_buf_printf(&data, ", \"tool\": ");
    th_buf_json_string(&data, ctx.tool, strlen(ctx.tool));
    th_buf_printf(&data, "}");
    return th_data_buf(result, &data);
}

static const th_tool tools[] = {
    {
        .name = "word_count",
        .description = "Counts the words, lines and characters of a text (the trivial tool of "
                       "the benchmarks).",
        .input_schema = "{\"type\": \"object\", \"properties\": {\"text\": {\"type\": "
                        "\"string\"}}, \"required\": [\"text\"]}",
        .run = word_count,
    },
    {.name = "fail", .description = "Fails with a tool error.", .input_schema = NO_ARGS, .run = fail},
    {
        .name = "bad_args",
        .description = "Refuses an odd n as invalid arguments.",
        .input_schema = "{\"type\": \"object\", \"properties\": {\"n\": {\"type\": "
                        "\"integer\"}}, \"required\": [\"n\"]}",
        .run = bad_args,
    },
    {
        .name = "crash",
        .description = "Aborts, as a C program with a bug would.",
        .input_schema = NO_ARGS,
        .run = crash,
    },
    {
        .name = "progress",
        .description = "Sends n updates, sleeping between them, then returns.",
        .input_schema = "{\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\", "
                        "\"minimum\": 1}, \"sleep_ms\": {\"type\": \"integer\", \"minimum\": 0, "
                        "\"default\": 0}}, \"required\": [\"n\"]}",
        .cancellable = true,
        .run = progress,
    },
    {
        .name = "wait_cancel",
        .description = "Waits until the call is cancelled.",
        .input_schema = NO_ARGS,
        .cancellable = true,
        .run = wait_cancel,
    },
    {
        .name = "info",
        .description = "Returns th_call_info() and logs a line.",
        .input_schema = NO_ARGS,
        .run = info,
    },
};
TOOLHOST_PLUGIN(tools)
