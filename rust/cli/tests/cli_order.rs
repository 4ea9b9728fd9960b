//! End-to-end tests of `tokenloom order --png`: the chart of a fresh order
//! and of an existing one (`--show`), and its failure paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{s, tokenloom};
use serde_json::Value;
use tokenloom_cli::chart::{HEIGHT, ORDERED, RANDOM, WIDTH};
use tokenloom_core::{DType, DatasetWriter, WriterOptions};

/// 90 documents of 3 topics, each topic drawing its tokens from its own
/// range of 60 ids, so that the order has related neighbours to find.
fn topical_dataset(root: &Path) {
    let opts = WriterOptions {
        dtype: DType::U16,
        eos_id: Some(0),
        vocab_size: Some(400),
        ..WriterOptions::default()
    };
    let mut w = DatasetWriter::create(root, opts).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for d in 0..90u16 {
        let topic = d % 3;
        let len = 30 + (d as usize * 7) % 40;
        let mut doc: Vec<u16> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                100 * (topic + 1) + (state >> 33) as u16 % 60
            })
            .collect();
        doc.push(0);
        w.add(&doc).unwrap();
    }
    w.close().unwrap();
}

/// Width, height and RGB pixels of a PNG file.
fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect()
}

#[test]
fn order_report_png_then_show_png() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    topical_dataset(&ds);
    let png = dir.path().join("sim.png");
    std::fs::write(&png, b"an older file, replaced whole").unwrap();
    let args = [
        "-q",
        "order",
        s(&ds),
        "--seq-len",
        "256",
        "-k",
        "5",
        "--exact",
        "--report",
        "--png",
        s(&png),
    ];
    let r = tokenloom(&args);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out
            .contains(&format!("similarity histograms: {}", png.display())),
        "{}",
        r.out
    );
    let (w, h, px) = decode(&png);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    // Both series are drawn: more than the legend's 16 x 16 swatch each.
    for color in [ORDERED, RANDOM] {
        let n = px.iter().filter(|&&p| p == color).count();
        assert!(n > 16 * 16 + 50, "{color:?}: {n} pixels");
    }
    assert!(leftovers(dir.path()).is_empty());

    // The stored report draws the same chart; --json output stays pure JSON.
    let again = dir.path().join("again.png");
    let r = tokenloom(&["order", s(&ds), "--show", "--json", "--png", s(&again)]);
    assert_eq!(r.code, 0, "{}", r.err);
    let report: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(
        report["ordered_pairs"]["histogram"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&png).unwrap());

    // The standalone binary draws it too (no fonts needed on the machine).
    let bin_png = dir.path().join("bin.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenloom"))
        .args(["order", s(&ds), "--show", "--png", s(&bin_png)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&bin_png).unwrap(),
        std::fs::read(&png).unwrap()
    );
}

#[test]
fn png_destination_errors_come_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    topical_dataset(&ds);
    let missing = dir.path().join("no/such/dir/out.png");
    let order = [
        "order",
        s(&ds),
        "--seq-len",
        "256",
        "-k",
        "5",
        "--name",
        "x",
    ];
    let r = tokenloom(&[&order[..], &["--png", s(&missing)]].concat());
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains(s(&missing)), "{}", r.err);
    assert!(
        r.err.contains("does not exist") && r.err.contains("mkdir -p"),
        "{}",
        r.err
    );
    // Nothing was ordered.
    assert!(!ds.join("orders").join("x.order").exists());

    let r = tokenloom(&[&order[..], &["--png", s(dir.path())]].concat());
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("is a directory"), "{}", r.err);
    assert!(!ds.join("orders").join("x.order").exists());

    // --show of an order that does not exist fails and writes no chart.
    let png = dir.path().join("none.png");
    let r = tokenloom(&["order", s(&ds), "--show", "--name", "x", "--png", s(&png)]);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("no order named"), "{}", r.err);
    assert!(!png.exists());
    assert!(leftovers(dir.path()).is_empty());
}
