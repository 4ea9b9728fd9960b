//! The fuzz target without libFuzzer (any toolchain): every seed input and corpus file as it
//! is, then a seeded random mutator over them until the time is up. Inputs that panic are
//! saved under the artifacts directory; the input being run is kept in `ARTIFACTS/.current`,
//! so that one that aborts the process (an allocation failure) is there too.
//!
//!     mutate [--seconds S] [--seed N] [--corpus DIR]... [--artifacts DIR] [--write-seeds DIR]

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokenloom_fuzz::{check, cleanup, seeds::seeds};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 10] = [0, 1, 2, 7, 8, 0x7f, 0xffff, 0x7fff_ffff, u64::MAX, 1 << 40];

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 1 => {
                let at = 1 + rng.below(len - 1); // byte 0 picks the kind: keep it mostly
                v[at] ^= 1 << rng.below(8);
            }
            1 if len > 1 => {
                let at = 1 + rng.below(len - 1);
                v[at] = rng.next() as u8;
            }
            2 => v.truncate(1 + rng.below(len.max(1))),
            3 if len > 9 => {
                let at = 1 + rng.below(len - 8);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                let x = if rng.below(2) == 0 {
                    x
                } else {
                    x.wrapping_add(len as u64)
                };
                v[at..at + 8].copy_from_slice(&x.to_le_bytes());
            }
            4 => {
                let at = rng.below(len + 1).max(1).min(len);
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, extra);
            }
            5 if !other.is_empty() && len > 1 => {
                let cut = 1 + rng.below(len - 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if len > 2 => {
                let a = 1 + rng.below(len - 1);
                let b = a + rng.below(len - a);
                v.drain(a..b);
            }
            _ => {}
        }
    }
    v
}

fn arg_values(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let one = |name: &str| arg_values(&args, name).pop();
    let seconds: f64 = one("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let seed: u64 = one("--seed").and_then(|s| s.parse().ok()).unwrap_or(0);
    let artifacts = PathBuf::from(one("--artifacts").unwrap_or_else(|| "fuzz-artifacts".into()));
    let scratch = std::env::temp_dir().join(format!("tokenloom-seeds-{}", std::process::id()));
    let mut pool = seeds(&scratch);
    let _ = fs::remove_dir_all(&scratch);
    if let Some(dir) = one("--write-seeds") {
        let _ = fs::create_dir_all(&dir);
        for s in &pool {
            let name = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s));
            let _ = fs::write(PathBuf::from(&dir).join(name), s);
        }
        println!("wrote {} seeds to {dir}", pool.len());
        return ExitCode::SUCCESS;
    }
    for dir in arg_values(&args, "--corpus") {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(b) = fs::read(e.path()) {
                pool.push(b);
            }
        }
    }
    let _ = fs::create_dir_all(&artifacts);
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let (start, limit) = (Instant::now(), Duration::from_secs_f64(seconds));
    let (mut execs, mut crashes) = (0u64, 0u64);
    let current = artifacts.join(".current");
    let mut run = |data: &[u8]| {
        let _ = fs::write(&current, data);
        execs += 1;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| check(data))) {
            crashes += 1;
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let name = format!("crash-{:016x}", xxhash_rust::xxh3::xxh3_64(data));
            let _ = fs::write(artifacts.join(&name), data);
            eprintln!("{name}: {what}");
        }
    };
    // Every seed and corpus input as it is first: the corpus doubles as a regression suite.
    for data in &pool {
        run(data);
    }
    while start.elapsed() < limit {
        let base = &pool[rng.below(pool.len())];
        let other = &pool[rng.below(pool.len())];
        let data = mutate(&mut rng, base, other);
        run(&data);
    }
    let _ = fs::remove_file(&current);
    cleanup();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{execs} execs in {secs:.0} s ({:.0}/s) over {} inputs, seed {seed}: {crashes} crashes",
        execs as f64 / secs,
        pool.len()
    );
    if crashes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
