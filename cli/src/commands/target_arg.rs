//! The `N:…` form of the flags that set something on one of a model's
//! targets (`--target-default-param`, `--target-price`): N counts the
//! targets from 1, in priority order.

use anyhow::{bail, Context, Result};

/// `N:REST` as (N, REST); `form` is what the argument should look like
/// (`N:NAME=VALUE`), for the error.
pub fn split<'a>(arg: &'a str, form: &str) -> Result<(usize, &'a str)> {
    let (n, rest) = arg
        .split_once(':')
        .with_context(|| format!("`{arg}` is not {form} (N: the target's number, from 1)"))?;
    let n: usize = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .with_context(|| format!("`{arg}`: the target's number must be 1 or more"))?;
    Ok((n, rest))
}

/// An error when `flag arg` names target `n` of a model with `len`.
pub fn check(flag: &str, arg: &str, n: usize, len: usize) -> Result<()> {
    if n > len {
        bail!(
            "{flag} {arg}: there {} only {len} target{}",
            if len == 1 { "is" } else { "are" },
            if len == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_one_and_the_count_checked() {
        assert_eq!(split("2:x=1", "N:NAME=VALUE").unwrap(), (2, "x=1"));
        assert_eq!(split(" 1 :", "N:IN,OUT").unwrap(), (1, ""));
        let err = split("x", "N:IN,OUT").unwrap_err().to_string();
        assert!(err.contains("`x` is not N:IN,OUT"), "{err}");
        assert!(split("0:a", "N:IN,OUT")
            .unwrap_err()
            .to_string()
            .contains("1 or more"));
        assert!(check("--f", "3:", 3, 3).is_ok());
        let err = check("--f", "2:", 2, 1).unwrap_err().to_string();
        assert_eq!(err, "--f 2:: there is only 1 target");
        let err = check("--f", "4:", 4, 3).unwrap_err().to_string();
        assert_eq!(err, "--f 4:: there are only 3 targets");
    }
}
