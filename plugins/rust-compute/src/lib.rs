//! Example plugin: small computations. `word_count` is cheap (the benchmarks
//! use it to measure the host's per-call overhead), `count_primes` is
//! compute-heavy (for the fuel-metering overhead), `sha256` hashes text.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::json;
use sha2::{Digest, Sha256};
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};

/// The largest `limit` that `count_primes` accepts: the sieve needs
/// `limit / 16` bytes, about 6 MiB here.
const MAX_LIMIT: u64 = 100_000_000;

struct Compute;

#[derive(Deserialize)]
struct Text {
    text: String,
}

#[derive(Deserialize)]
struct Limit {
    #[serde(deserialize_with = "int")]
    limit: u64,
}

/// A non-negative integer argument. JSON Schema counts 2.0 as an integer,
/// serde does not.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=9.0e15).contains(f))
                .map(|f| f as u64)
        })
        .ok_or_else(|| D::Error::custom(format!("{n} is not a non-negative integer")))
}

/// The number of primes below `limit`, by a sieve of Eratosthenes over the
/// odd numbers, one bit each.
fn count_primes(limit: u64) -> u64 {
    if limit <= 2 {
        return 0;
    }
    // Bit i stands for the odd number 2i + 1; a set bit means composite.
    let odds = (limit / 2) as usize;
    let mut composite = vec![0u64; odds.div_ceil(64)];
    composite[0] |= 1; // 1 is not prime
    let mut i = 1;
    while (2 * i + 1) * (2 * i + 1) < odds * 2 {
        if composite[i / 64] & (1 << (i % 64)) == 0 {
            let p = 2 * i + 1;
            let mut j = (p * p) / 2;
            while j < odds {
                composite[j / 64] |= 1 << (j % 64);
                j += p;
            }
        }
        i += 1;
    }
    // Bits past `odds` in the last word are padding: mark them composite.
    let tail = odds % 64;
    if tail != 0
        && let Some(last) = composite.last_mut()
    {
        *last |= !0u64 << tail;
    }
    let odd_primes: u64 = composite.iter().map(|w| u64::from(w.count_zeros())).sum();
    odd_primes + 1 // and 2
}

fn word_count(text: &str) -> ToolOutput {
    let words = text.split_whitespace().count();
    let lines = text.lines().count();
    let chars = text.chars().count();
    ToolOutput::text_and_data(
        format!("{words} words, {lines} lines, {chars} characters"),
        &json!({ "words": words, "lines": lines, "chars": chars }),
    )
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plugin for Compute {
    fn describe() -> Vec<ToolSpec> {
        let text_arg = json!({
            "type": "object",
            "properties": { "text": { "type": "string" } },
            "required": ["text"]
        });
        vec![
            ToolSpec {
                output_schema: Some(
                    json!({
                        "type": "object",
                        "properties": {
                            "words": { "type": "integer" },
                            "lines": { "type": "integer" },
                            "chars": { "type": "integer" }
                        },
                        "required": ["words", "lines", "chars"]
                    })
                    .to_string(),
                ),
                ..spec(
                    "word_count",
                    "Counts the words, lines and characters of a text.",
                    text_arg.clone(),
                )
            },
            ToolSpec {
                output_schema: Some(
                    json!({
                        "type": "object",
                        "properties": {
                            "limit": { "type": "integer" },
                            "primes": { "type": "integer" }
                        },
                        "required": ["limit", "primes"]
                    })
                    .to_string(),
                ),
                ..spec(
                    "count_primes",
                    "Counts the prime numbers below a limit (at most 100,000,000).",
                    json!({
                        "type": "object",
                        "properties": {
                            "limit": { "type": "integer", "minimum": 0, "maximum": MAX_LIMIT }
                        },
                        "required": ["limit"]
                    }),
                )
            },
            spec(
                "sha256",
                "The SHA-256 digest of a text (its UTF-8 bytes), in hex.",
                text_arg,
            ),
        ]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "word_count" => {
                let Text { text } = toolhost_guest::args(&arguments)?;
                Ok(word_count(&text))
            }
            "count_primes" => {
                let Limit { limit } = toolhost_guest::args(&arguments)?;
                if limit > MAX_LIMIT {
                    return Err(ToolError::InvalidArguments(format!(
                        "limit must be at most {MAX_LIMIT}"
                    )));
                }
                let primes = count_primes(limit);
                Ok(ToolOutput::text_and_data(
                    format!("There are {primes} primes below {limit}."),
                    &json!({ "limit": limit, "primes": primes }),
                ))
            }
            "sha256" => {
                let Text { text } = toolhost_guest::args(&arguments)?;
                Ok(ToolOutput::text(sha256(&text)))
            }
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Compute);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_primes_below_the_limit() {
        let expected = [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 1),
            (4, 2),
            (10, 4),
            (11, 4),
            (12, 5),
            (100, 25),
            (127, 30),
            (128, 31),
            (1000, 168),
            (1_000_000, 78_498),
        ];
        for (limit, primes) in expected {
            assert_eq!(count_primes(limit), primes, "below {limit}");
        }
    }

    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
