//! The options file of mosquitto_pub(1) / mosquitto_sub(1): default options read before the
//! command line, so setups written for mosquitto carry over to `mqlink pub` / `mqlink sub`.
//!
//! Lookup as in mosquitto 2.0: `$XDG_CONFIG_HOME/mosquitto_pub` when `XDG_CONFIG_HOME` is
//! set (no fallback then), otherwise `$HOME/.config/mosquitto_pub`; `_sub` for sub. One
//! `-option value` per line: the option ends at the first space and everything after it
//! (spaces included) is the value; lines starting with `#` are comments. A missing or
//! unreadable file is no error (mosquitto skips it too). The options go before the command
//! line's, and a later option overrides an earlier one, so the command line wins, except
//! for the repeatable `-t`/`-T`/`-U`, which add up.

use std::ffi::OsString;
use std::path::PathBuf;

/// Most bytes read from the file: options, not data.
const MAX_BYTES: u64 = 1024 * 1024;

/// Where `tool` (`mosquitto_pub` or `mosquitto_sub`) looks for its options file.
pub fn path(tool: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join(tool));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join(tool))
}

/// The arguments in `tool`'s options file, in order; empty when there is none.
pub fn args(tool: &str) -> Vec<OsString> {
    let Some(path) = path(tool) else {
        return Vec::new();
    };
    let Ok(file) = std::fs::File::open(&path) else {
        return Vec::new();
    };
    let mut text = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BYTES), &mut text).is_err() {
        return Vec::new();
    }
    parse(&String::from_utf8_lossy(&text))
}

/// Lines to arguments, as mosquitto's `client_config_load` splits them.
pub fn parse(text: &str) -> Vec<OsString> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with('#') {
            continue;
        }
        // strtok(line, " "): leading spaces are skipped, the option ends at the next space.
        let line = line.trim_start_matches(' ');
        if line.is_empty() {
            continue;
        }
        match line.split_once(' ') {
            Some((opt, value)) => {
                out.push(opt.into());
                if !value.is_empty() {
                    out.push(value.into());
                }
            }
            None => out.push(line.into()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_space_and_comments_are_skipped() {
        let got = parse("# a comment\n-h broker\r\n\n-v\n-m two words \n  -q 1\n");
        let want: Vec<OsString> = ["-h", "broker", "-v", "-m", "two words ", "-q", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(got, want);
    }
}
