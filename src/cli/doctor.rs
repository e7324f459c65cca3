//! `herald doctor`: runs [`crate::app::doctor`]'s checks and prints one line per check, with
//! the fix for each that is not OK, or a JSON document (`--json`). Exits 0 when nothing
//! failed (warnings allowed), 1 when a check failed, 2 when the configuration cannot be
//! loaded, as every command does.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::app::{
    self,
    doctor::{self, Check, Report},
};
use crate::config::Config;

/// Loads the configuration (its failure is the first check's), runs the checks and prints them.
pub(super) fn main(config_path: Option<&Path>, json: bool) -> ExitCode {
    let config = match Config::from_env(config_path) {
        Ok(config) => config,
        Err(e) => return configuration_failed(&e, json),
    };
    app::init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(doctor::run(&config, &crate::clock::system()));
    print(&report, json)
}

/// Prints the report and answers the exit code.
fn print(report: &Report, json: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&Json {
            ok: !report.failed(),
            checks: &report.checks,
        })
        .map_err(std::io::Error::other)
        .and_then(|text| writeln!(out, "{text}"))
    } else {
        report
            .checks
            .iter()
            .try_for_each(|check| writeln!(out, "{}", line(check)))
    };
    let _ = written.and_then(|()| out.flush());
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `FAIL  master key     wrong key: … — fix: …`.
fn line(check: &Check) -> String {
    let mut line = format!(
        "{:<5} {:<14} {}",
        check.outcome.label(),
        check.name,
        check.detail
    );
    if let Some(fix) = &check.fix {
        line.push_str(" — fix: ");
        line.push_str(fix);
    }
    line
}

#[derive(serde::Serialize)]
struct Json<'a> {
    ok: bool,
    checks: &'a [Check],
}

/// The report when the configuration does not load: that check alone.
fn configuration_failed(error: &crate::config::ConfigError, json: bool) -> ExitCode {
    let report = Report {
        checks: vec![doctor::configuration_failed(error)],
    };
    print(&report, json);
    ExitCode::from(2)
}
