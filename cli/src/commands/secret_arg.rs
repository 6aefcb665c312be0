//! Secrets given without the command line: each flag that takes a secret
//! (`--api-key`, `--proxy`, whose URL may hold credentials) has two twins,
//! `--X-file FILE` (the first line of FILE, or of standard input for `-`)
//! and `--X-env VAR` (the value of an environment variable), because
//! arguments are visible to every local user in `ps` and stay in shell
//! history. The admin token has the same two ways already
//! (`LLMGW_ADMIN_TOKEN`, `--token-file`). Surrounding whitespace is
//! trimmed, and an empty secret is refused: removing one takes the flag
//! itself with an empty value (`--api-key ''`, `--no-proxy`).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The ways one secret can be given; at most one of them (clap refuses
/// the others).
pub struct Secret<'a> {
    /// The flag's name without `--` (`api-key`), for errors.
    pub flag: &'a str,
    /// On the command line.
    pub value: Option<String>,
    /// `--X-file`: a file, or `-` for standard input.
    pub file: Option<PathBuf>,
    /// `--X-env`: an environment variable's name.
    pub env: Option<String>,
}

/// Standard input, which at most one secret may be read from.
pub struct Stdin<R> {
    reader: R,
    taken_by: Option<String>,
}

impl<R: BufRead> Stdin<R> {
    pub fn new(reader: R) -> Self {
        Stdin {
            reader,
            taken_by: None,
        }
    }
}

/// The first line of `r`, without its line ending.
fn first_line(mut r: impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line)
}

impl Secret<'_> {
    /// The secret, from wherever it was given; `None` when it was not.
    pub fn read<R: BufRead>(self, stdin: &mut Stdin<R>) -> Result<Option<String>> {
        self.read_with(stdin, |var| std::env::var(var).ok())
    }

    fn read_with<R: BufRead>(
        self,
        stdin: &mut Stdin<R>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>> {
        let flag = self.flag;
        let (text, from) = if let Some(v) = self.value {
            return Ok(Some(v));
        } else if let Some(var) = self.env {
            let v = env(&var).with_context(|| {
                format!("--{flag}-env {var}: the environment variable {var} is not set")
            })?;
            (v, format!("--{flag}-env {var}"))
        } else if let Some(path) = self.file {
            let from = format!("--{flag}-file {}", path.display());
            let text = if path == Path::new("-") {
                if let Some(other) = &stdin.taken_by {
                    bail!(
                        "{from}: standard input is already read for {other}; give one of \
                         them in a file or an environment variable"
                    );
                }
                stdin.taken_by = Some(format!("--{flag}-file -"));
                first_line(&mut stdin.reader)
            } else {
                std::fs::File::open(&path).and_then(|f| first_line(std::io::BufReader::new(f)))
            };
            (
                text.with_context(|| format!("{from}: cannot read it"))?,
                from,
            )
        } else {
            return Ok(None);
        };
        let text = text.trim();
        if text.is_empty() {
            bail!("{from}: it is empty (to remove the value, give --{flag} '' or its --no- flag)");
        }
        // A file gives its first line; a variable's value is taken whole,
        // and a secret holds no line break.
        if text.contains(['\n', '\r']) {
            bail!("{from}: it holds more than one line; a secret is one line");
        }
        Ok(Some(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: Option<&str>, file: Option<&Path>, env: Option<&str>) -> Secret<'static> {
        Secret {
            flag: "api-key",
            value: value.map(Into::into),
            file: file.map(Into::into),
            env: env.map(Into::into),
        }
    }

    fn env(var: &str) -> Option<String> {
        match var {
            "SET" => Some(" sk-env-1234\n".into()),
            "EMPTY" => Some(String::new()),
            "LINES" => Some("sk-one\nsk-two\n".into()),
            _ => None,
        }
    }

    #[test]
    fn a_secret_comes_from_the_flag_a_file_standard_input_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-file-1234\nsecond line\n").unwrap();
        let mut stdin = Stdin::new(&b"sk-stdin-1234\r\nmore\n"[..]);
        for (s, want) in [
            (secret(Some("sk-arg"), None, None), Some("sk-arg")),
            (secret(Some(""), None, None), Some("")),
            (secret(None, Some(&file), None), Some("sk-file-1234")),
            (
                secret(None, Some(Path::new("-")), None),
                Some("sk-stdin-1234"),
            ),
            (secret(None, None, Some("SET")), Some("sk-env-1234")),
            (secret(None, None, None), None),
        ] {
            let got = s.read_with(&mut stdin, env).unwrap();
            assert_eq!(got.as_deref(), want);
        }
    }

    #[test]
    fn bad_sources_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, "  \n").unwrap();
        let missing = dir.path().join("missing");
        for (s, says) in [
            (
                secret(None, None, Some("UNSET")),
                "--api-key-env UNSET: the environment variable UNSET is not set",
            ),
            (
                secret(None, None, Some("EMPTY")),
                "--api-key-env EMPTY: it is empty",
            ),
            (
                secret(None, None, Some("LINES")),
                "--api-key-env LINES: it holds more than one line",
            ),
            (secret(None, Some(&blank), None), "it is empty"),
            (secret(None, Some(&missing), None), "cannot read it"),
        ] {
            let err = s.read_with(&mut Stdin::new(&b""[..]), env).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
        // Standard input serves one secret.
        let mut stdin = Stdin::new(&b"a\nb\n"[..]);
        let dash = || secret(None, Some(Path::new("-")), None);
        assert_eq!(
            dash().read_with(&mut stdin, env).unwrap().as_deref(),
            Some("a")
        );
        let mut proxy = dash();
        proxy.flag = "proxy";
        let err = proxy.read_with(&mut stdin, env).unwrap_err().to_string();
        assert!(
            err.contains("--proxy-file -: standard input is already read for --api-key-file -"),
            "{err}"
        );
    }
}
