//! Counts lines, words and bytes of each input file under /in (or of stdin when
//! no file is named) and writes the ten most frequent words to /out/top.txt.
//!
//! Usage: wordcount [FILE...]   (names are relative to /in)

use std::collections::HashMap;
use std::io::{Read, Write};

fn main() {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if names.is_empty() {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).expect("read stdin");
        inputs.push(("-".into(), buf));
    }
    for name in names {
        match std::fs::read(format!("/in/{name}")) {
            Ok(bytes) => inputs.push((name, bytes)),
            Err(e) => {
                eprintln!("wordcount: /in/{name}: {e}");
                std::process::exit(2);
            }
        }
    }
    let mut freq: HashMap<String, u64> = HashMap::new();
    let mut out = std::io::stdout().lock();
    for (name, bytes) in &inputs {
        let text = String::from_utf8_lossy(bytes);
        let lines = text.lines().count();
        let mut words = 0;
        for w in text.split_whitespace() {
            words += 1;
            let w: String = w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
            if !w.is_empty() {
                *freq.entry(w).or_default() += 1;
            }
        }
        writeln!(out, "{lines:8} {words:8} {:8} {name}", bytes.len()).unwrap();
    }
    let mut top: Vec<(String, u64)> = freq.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut report = String::new();
    for (w, n) in top.iter().take(10) {
        report.push_str(&format!("{n} {w}\n"));
    }
    std::fs::write("/out/top.txt", report).expect("write /out/top.txt");
}
