//! What a test process leaves behind is cleaned up when it ends, however it ends: fixtures
//! shared through statics are never dropped. A shell whose stdin is a pipe from the test
//! process sees it close when the test process lets go of it or exits, and cleans up then.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use anyhow::Context;

/// Starts `"$@"` with its output appended to `$LOG`, prints its pid, and waits for it (so the
/// shell's exit status is the process's); a second shell kills it at end of input.
const GUARD: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- >>"$LOG" 2>&1 &
child=$!
echo "$child"
{ read -r _ <&3; kill -KILL "$child" 2>/dev/null; } &
wait "$child"
"#;

/// A process under a guard shell, killed when dropped or when the test process ends.
#[derive(Debug)]
pub struct Guarded {
    shell: Child,
    /// Dropped to kill the process.
    lifeline: Option<ChildStdin>,
    pid: u32,
}

impl Guarded {
    /// Starts `command` (program, arguments and environment are kept; its stdio is the
    /// guard's) with stdout and stderr appended to `log`.
    pub fn spawn(command: &Command, log: &Path) -> anyhow::Result<Guarded> {
        let mut shell = Command::new("sh");
        shell
            .args(["-c", GUARD, "guard"])
            .arg(command.get_program())
            .args(command.get_args())
            .env("LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => shell.env(key, value),
                None => shell.env_remove(key),
            };
        }
        let mut shell = shell.spawn().context("start the guard shell")?;
        let lifeline = shell.stdin.take();
        let mut line = String::new();
        BufReader::new(shell.stdout.take().context("guard stdout")?).read_line(&mut line)?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("the guard shell printed {line:?}, not a pid"))?;
        Ok(Guarded {
            shell,
            lifeline,
            pid,
        })
    }

    /// The guarded process's id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The process's exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.shell.try_wait()
    }

    /// Asks the process to stop (SIGTERM, as an orchestrator does), unless it has exited
    /// already, and waits up to `within` for it to exit; its exit status.
    pub fn terminate(&mut self, within: std::time::Duration) -> anyhow::Result<ExitStatus> {
        // Fails only when the process has exited already, which the wait below sees.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.shell.try_wait()? {
                self.lifeline.take();
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "process {} still running {within:?} after SIGTERM",
                self.pid
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL, as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        self.lifeline.take();
        let _ = self.shell.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes a directory when dropped or when the test process ends.
#[derive(Debug)]
pub struct Janitor {
    shell: Child,
}

impl Janitor {
    /// Removes `dir` then, a second after the processes guarded with it are killed.
    pub fn remove_at_exit(dir: &Path) -> anyhow::Result<Janitor> {
        let shell = Command::new("sh")
            .args(["-c", r#"read -r _; sleep 1; rm -rf "$1""#, "janitor"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the janitor shell")?;
        Ok(Janitor { shell })
    }
}

impl Drop for Janitor {
    /// Sets the shell going without waiting for it: whoever dropped this has usually removed
    /// the directory already.
    fn drop(&mut self) {
        self.shell.stdin.take();
    }
}
