//! Example plugin: small computations. `word_count` is cheap (the benchmarks
//! use it to measure the host's per-call overhead), `count_primes` is
//! compute-heavy (for the fuel-metering overhead), `sha256` hashes text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toolhost_guest::{Tool, ToolError, ToolOutput, Tools};

/// The largest `limit` that `count_primes` accepts: the sieve needs
/// `limit / 16` bytes, about 6 MiB here.
const MAX_LIMIT: u64 = 100_000_000;

#[derive(Deserialize, JsonSchema)]
struct Text {
    /// The text.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct Limit {
    /// Count the primes below this number (at most 100,000,000).
    #[schemars(range(max = 100_000_000))]
    limit: u64,
}

#[derive(Serialize, JsonSchema)]
struct Counts {
    words: usize,
    lines: usize,
    chars: usize,
}

#[derive(Serialize, JsonSchema)]
struct Primes {
    limit: u64,
    primes: u64,
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

fn word_count(Text { text }: Text) -> Result<ToolOutput, ToolError> {
    let counts = Counts {
        words: text.split_whitespace().count(),
        lines: text.lines().count(),
        chars: text.chars().count(),
    };
    Ok(ToolOutput::text_and_data(
        format!(
            "{} words, {} lines, {} characters",
            counts.words, counts.lines, counts.chars
        ),
        &counts,
    ))
}

fn primes(Limit { limit }: Limit) -> Result<ToolOutput, ToolError> {
    if limit > MAX_LIMIT {
        return Err(ToolError::invalid(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    let primes = count_primes(limit);
    Ok(ToolOutput::text_and_data(
        format!("There are {primes} primes below {limit}."),
        &Primes { limit, primes },
    ))
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Compute;

impl Tools for Compute {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "word_count",
                "Counts the words, lines and characters of a text.",
                word_count,
            )
            .output::<Counts>(),
            Tool::new(
                "count_primes",
                "Counts the prime numbers below a limit (at most 100,000,000).",
                primes,
            )
            .output::<Primes>(),
            Tool::new(
                "sha256",
                "The SHA-256 digest of a text (its UTF-8 bytes), in hex.",
                |Text { text }| Ok::<_, ToolError>(ToolOutput::text(sha256(&text))),
            ),
        ]
    }
}

toolhost_guest::export_tools!(Compute);

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
