//! The input history across runs: a file of lines, the last
//! [`HISTORY_LINES`] kept, readable by its owner only.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::editor::HISTORY_LINES;

/// Where the history lives by default: `imchat/history` in the user's data
/// folder (`$XDG_DATA_HOME` or `~/.local/share` on Linux).
pub fn default_history_file() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("imchat").join("history"))
}

/// The history file, with its lines in memory to rewrite it when it grows
/// past the cap.
#[derive(Debug)]
pub struct HistoryFile {
    path: PathBuf,
    lines: VecDeque<String>,
    /// How many times the file was written (appended to or rewritten),
    /// counted where it is written.
    #[cfg(test)]
    writes: usize,
}

impl HistoryFile {
    /// Reads the file at `path` (missing: no lines yet); returns it with its
    /// last lines, oldest first.
    pub fn open(path: PathBuf) -> io::Result<(Self, Vec<String>)> {
        let lines: VecDeque<String> = match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                // A password an older client kept is not loaded again.
                let all: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.is_empty() && !super::editor::may_hold_a_password(l))
                    .collect();
                let skip = all.len().saturating_sub(HISTORY_LINES);
                all[skip..].iter().map(|l| (*l).to_owned()).collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(e),
        };
        let recent = lines.iter().cloned().collect();
        let file = Self {
            path,
            lines,
            #[cfg(test)]
            writes: 0,
        };
        Ok((file, recent))
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line`; past the cap, rewrites the file with the last lines.
    #[cfg(test)]
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        self.append_all(&[line])
    }

    /// Appends `lines` (the line entered, or every line of a paste) in
    /// one write; past the cap, rewrites the file once with the last
    /// lines. Line by line, a paste of 2,000 lines into a full history
    /// rewrote and synced the file 2,000 times, the screen frozen for
    /// seconds meanwhile.
    pub fn append_all<S: AsRef<str>>(&mut self, lines: &[S]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        // A line is one line in the file: the editor never holds a newline.
        let mut text = String::new();
        for line in lines {
            let line = line.as_ref().replace(['\n', '\r'], " ");
            text.push_str(&line);
            text.push('\n');
            self.lines.push_back(line);
        }
        if self.lines.len() > HISTORY_LINES {
            let excess = self.lines.len() - HISTORY_LINES;
            self.lines.drain(..excess);
            return self.rewrite();
        }
        let mut file = create_private(&self.path, true)?;
        self.count_write();
        file.write_all(text.as_bytes())
    }

    /// Takes `line` out again (its last copy): a line the client refused
    /// to send (too long) is not kept. Nothing is written when the file
    /// does not hold it.
    pub fn forget(&mut self, line: &str) -> io::Result<()> {
        let line = line.replace(['\n', '\r'], " ");
        let Some(at) = self.lines.iter().rposition(|l| *l == line) else {
            return Ok(());
        };
        self.lines.remove(at);
        self.rewrite()
    }

    /// Writes the file anew with the lines held.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut text = String::new();
        for l in &self.lines {
            text.push_str(l);
            text.push('\n');
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = create_private(&tmp, false)?;
        self.count_write();
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)
    }

    /// Counts a write of the file, for the tests.
    #[cfg(test)]
    fn count_write(&mut self) {
        self.writes += 1;
    }

    #[cfg(not(test))]
    fn count_write(&mut self) {}
}

/// Opens `path` for writing (appending or from empty), created with mode
/// 0600 in a folder created with mode 0700.
fn create_private(path: &Path, append: bool) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_in_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imchat").join("history");
        let (mut file, recent) = HistoryFile::open(path.clone()).unwrap();
        assert!(recent.is_empty());
        file.append("hello").unwrap();
        file.append("/quit see you").unwrap();
        let (_, recent) = HistoryFile::open(path.clone()).unwrap();
        assert_eq!(recent, ["hello", "/quit see you"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A line refused as too long is taken out of the file again, and
    /// the others stay.
    #[test]
    fn a_forgotten_line_is_gone_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let (mut file, _) = HistoryFile::open(path.clone()).unwrap();
        let long = "y".repeat(70_000);
        file.append_all(&["before", long.as_str(), "after"])
            .unwrap();
        file.forget(&long).unwrap();
        file.forget("never entered").unwrap();
        let (_, recent) = HistoryFile::open(path).unwrap();
        assert_eq!(recent, ["before", "after"]);
    }

    #[test]
    fn a_register_line_with_a_password_kept_by_an_older_client_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        fs::write(&path, "hi\n/register hunter2\n/registered x\n/register\n").unwrap();
        let (_, recent) = HistoryFile::open(path).unwrap();
        assert_eq!(recent, ["hi", "/registered x", "/register"]);
    }

    #[test]
    fn the_file_keeps_the_last_thousand_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let (mut file, _) = HistoryFile::open(path.clone()).unwrap();
        for i in 0..1_005 {
            file.append(&format!("line {i}")).unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), HISTORY_LINES);
        let (_, recent) = HistoryFile::open(path.clone()).unwrap();
        assert_eq!(recent.len(), HISTORY_LINES);
        assert_eq!(recent[0], "line 5");
        assert_eq!(recent[HISTORY_LINES - 1], "line 1004");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the rewritten file stays private");
        }
    }

    /// A paste's lines, entered at once, are written at once: into a full
    /// history, one rewrite, not one per line.
    #[test]
    fn the_lines_of_a_paste_are_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let text: String = (0..HISTORY_LINES).map(|i| format!("old {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let (mut file, _) = HistoryFile::open(path.clone()).unwrap();
        let pasted: Vec<String> = (0..2_000).map(|i| format!("pasted {i}")).collect();
        file.append_all(&pasted).unwrap();
        assert_eq!(file.writes, 1, "one write for the paste");
        let (_, recent) = HistoryFile::open(path.clone()).unwrap();
        assert_eq!(recent.len(), HISTORY_LINES);
        assert_eq!(recent[0], "pasted 1000");
        assert_eq!(recent[HISTORY_LINES - 1], "pasted 1999");
        // Below the cap, appended in one write too.
        let other = dir.path().join("other");
        let (mut file, _) = HistoryFile::open(other.clone()).unwrap();
        file.append_all(&["a", "b\nc", "d"]).unwrap();
        assert_eq!(file.writes, 1);
        let (_, recent) = HistoryFile::open(other).unwrap();
        assert_eq!(recent, ["a", "b c", "d"]);
    }

    #[test]
    fn a_longer_file_loads_its_last_thousand_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let text: String = (0..1_500).map(|i| format!("{i}\n")).collect();
        fs::write(&path, text).unwrap();
        let (_, recent) = HistoryFile::open(path).unwrap();
        assert_eq!(recent.len(), HISTORY_LINES);
        assert_eq!(recent[0], "500");
    }

    #[test]
    fn the_default_file_is_in_the_data_folder() {
        if let Some(path) = default_history_file() {
            assert!(path.ends_with("imchat/history"));
            assert_eq!(path.parent().unwrap().parent(), dirs::data_dir().as_deref());
        }
    }
}
