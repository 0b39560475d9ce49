/*
 * {folder}: a toolhost plugin. `{tool}` counts the words in each line of
 * a text, reporting progress and stopping early when cancelled. Replace it
 * with your own tools; toolhost.h and plugins/README.md in the checkout show
 * the rest.
 */
#include <ctype.h>
#include <stddef.h>

#include "toolhost.h"

/* At most about this many progress updates per call. */
#define MAX_UPDATES 10

/* The words in text[start..end): runs of characters that are not spaces. */
static size_t words_in(const char *text, size_t start, size_t end) {
    size_t words = 0;
    bool in_word = false;
    for (size_t i = start; i < end; i++) {
        bool space = isspace((unsigned char)text[i]);
        if (!space && !in_word) words++;
        in_word = !space;
    }
    return words;
}

static int count_words(const th_args *args, th_result *result) {
    const char *text;
    size_t len;
    th_arg_string(args, "text", &text, &len);
    uint32_t delay_ms = (uint32_t)th_arg_int(args, "delay_ms", 0);

    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (words_in(text, 0, len) == 0) return th_invalid_arguments(result, "text must not be blank");
    size_t every = lines / MAX_UPDATES > 1 ? lines / MAX_UPDATES : 1;

    size_t words = 0, done = 0, start = 0;
    while (done < lines) {
        if (th_cancelled()) {
            th_data(result, "{\"words\": %zu, \"lines\": %zu}", words, done);
            return th_text(result, "cancelled after %zu of %zu lines: %zu words so far", done,
                           lines, words);
        }
        size_t end = start;
        while (end < len && text[end] != '\n') end++;
        words += words_in(text, start, end);
        done++;
        start = end + 1;
        if (done % every == 0) th_update("line %zu of %zu: %zu words so far", done, lines, words);
        th_sleep_ms(delay_ms);
    }
    th_data(result, "{\"words\": %zu, \"lines\": %zu}", words, lines);
    return th_text(result, "%zu words in %zu lines", words, lines);
}

static const th_tool tools[] = {
    {
        .name = "{tool}",
        .description = "Counts the words in each line of `text`, reporting progress as it goes.",
        .input_schema =
            "{\"type\": \"object\", \"properties\": {"
            "\"text\": {\"type\": \"string\", \"description\": \"The text to count, line by line.\"}, "
            /* Optional: null (which strict-mode clients send) reads as absent. OpenAI
               strict mode refuses `default`, so the description says it. */
            "\"delay_ms\": {\"type\": [\"integer\", \"null\"], \"minimum\": 0, \"maximum\": 1000, "
            "\"description\": \"A pause after each line, in milliseconds, to watch the progress. "
            "Default: 0.\"}}, "
            "\"required\": [\"text\"]}",
        .cancellable = true,
        .run = count_words,
    },
};
TOOLHOST_PLUGIN(tools)
