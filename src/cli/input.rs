//! Secrets typed by the operator: a line of standard input, or a new password asked for twice
//! at the terminal. The copies read are zeroed once wrapped.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{Context as _, bail};
use secrecy::SecretString;

pub(super) fn read_stdin_line() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    Ok(SecretString::from(trimmed))
}

pub(super) fn prompt_new_password() -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the password: pass --password-stdin and write the password to standard input"
        );
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second =
        rpassword::prompt_password("Repeat the password: ").context("cannot read the password")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(SecretString::from(first))
}
