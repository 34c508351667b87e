//! `script`: an LSB init script (`file`) run with start, stop or status.

use crate::cmd::{Cmd, Runner};
use crate::exec::{Op, StepError};
use crate::timeout::op_timeout;
use agents::ocf::LsbStatus;
use rm::ResourceStep;
use std::path::Path;

/// Checks a `script` resource: `file` is an absolute path to an existing file. Returns it.
pub(crate) fn check(step: &ResourceStep) -> Result<&str, StepError> {
    let file = step.attrs.get("file").map(String::as_str).unwrap_or("");
    if file.is_empty() {
        return Err(StepError::Config(format!(
            "script {}: no file attribute: give the init script's path, e.g. <script file=\"/etc/init.d/httpd\" name=\"{}\"/>",
            step.name, step.name
        )));
    }
    let path = Path::new(file);
    if !path.is_absolute() {
        return Err(StepError::Config(format!(
            "script {}: file=\"{file}\" is not an absolute path: write the full path (/etc/init.d/...)",
            step.name
        )));
    }
    if !path.is_file() {
        return Err(StepError::Config(format!(
            "script {}: {file} does not exist on this node: install it here or fix file=",
            step.name
        )));
    }
    Ok(file)
}

pub(crate) async fn run(r: &mut Runner<'_>, step: &ResourceStep, op: Op) -> Result<(), StepError> {
    let file = check(step)?;
    let timeout = op_timeout(&step.attrs, op)?;
    let out = r
        .run(Cmd::new(file, &[op.as_str()], timeout, "the script's package").netns())
        .await?;
    let code = out.code.unwrap_or(1);
    match (op, code) {
        (_, 0) => Ok(()),
        (Op::Status, c) => Err(StepError::Failed(match LsbStatus::from_code(c) {
            LsbStatus::NotRunning => format!("script {}: not running (LSB status 3)", step.name),
            LsbStatus::DeadPidFile => format!(
                "script {}: dead but its pid file exists (LSB status 1)",
                step.name
            ),
            LsbStatus::DeadLockFile => format!(
                "script {}: dead but its lock file exists (LSB status 2)",
                step.name
            ),
            _ => format!("script {}: status unknown (exit {c})", step.name),
        })),
        (op, c) => Err(StepError::Failed(format!(
            "script {}: {file} {} exited {c}{}",
            step.name,
            op.as_str(),
            lsb_meaning(c)
        ))),
    }
}

fn lsb_meaning(c: i32) -> &'static str {
    match c {
        1 => " (generic error)",
        2 => " (invalid arguments)",
        3 => " (unimplemented)",
        4 => " (insufficient privilege)",
        5 => " (program not installed)",
        6 => " (program not configured)",
        7 => " (program not running)",
        _ => "",
    }
}
