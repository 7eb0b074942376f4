//! The shared folder: access, the list, and download requests (the
//! server opens the file and streams it; the hub keeps the slots).

use crate::message::FileListPart;
use crate::message::FileStart;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::limits::DOWNLOAD_STALLED;

use super::admission::address_key;
use super::rate::Cost;
use super::{ClientId, FilesRequest, Hub, HubEvent};
use crate::message::{
    CancelCode, FileEntry, FileName, NoticeCode, Origin, ServerMessage, TransferId,
};

/// A running download's progress, for its idle timeout: a download makes
/// progress when it is asked for, when it starts, and when its client
/// acknowledges a chunk's worth of data more than at the last progress (or
/// the whole file). An ack of a few bytes now and then is not progress: a
/// client could hold a download slot for ever so, and all of them with a
/// few connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    /// When it last made progress.
    heard: Instant,
    /// The offset acknowledged (or streamed from) then.
    offset: u64,
    /// The file's size, once the download started.
    size: u64,
}

impl Progress {
    fn new(now: Instant) -> Progress {
        Progress {
            heard: now,
            offset: 0,
            size: u64::MAX,
        }
    }

    /// The download starts at `offset` of a file of `size` bytes.
    fn started(&mut self, offset: u64, size: u64) {
        self.offset = offset;
        self.size = size;
    }

    /// Its client acknowledged `offset` at `now`; chunks are of
    /// `chunk_size` bytes.
    pub(super) fn acked(&mut self, offset: u64, chunk_size: usize, now: Instant) {
        if self.moved_on_by(offset, chunk_size) {
            self.offset = offset;
            self.heard = now;
        }
    }

    /// Whether an ack of `offset` is progress: a chunk's worth more than
    /// the last (or the rest of the file) of a download that started,
    /// not past its end. Each chunk a client is sent and acknowledges is.
    pub(super) fn moved_on_by(&self, offset: u64, chunk_size: usize) -> bool {
        let step = (chunk_size as u64).min(crate::limits::ACK_STEP);
        self.size != u64::MAX
            && offset <= self.size
            && offset >= self.offset.saturating_add(step).min(self.size)
            && offset > self.offset
    }
}

/// How many ended downloads a connection's late acks are known for: as
/// many as it may run at once by default.
pub(super) const ENDED_KEPT: usize = crate::limits::DEFAULT_MAX_TRANSFERS;

impl Hub {
    pub(super) fn download(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        offset: u64,
        now: Instant,
    ) {
        let max_all = self.limits.max_downloads;
        let running = self.running_downloads();
        let Some(c) = self.conns.get(&client) else {
            return;
        };
        let in_use = c.downloads.iter().any(|(d, _)| *d == id);
        if id.is_server_chosen() || in_use {
            self.bad_transfer_id(client, id, "download");
            self.download_refused(client, id, name, "transfer id already in use or invalid");
            return;
        }
        if !self.has_transfer_slot(client, id) {
            let max = self.limits.max_transfers;
            self.download_refused(client, id, name, format!("at most {max} transfers at once"));
            return;
        }
        if running >= max_all && !self.take_stalled_download(client, now) {
            let files = count(max_all, "file", "files");
            let reason = format!(
                "the server is sending {files} already, as many as it sends at once; try again later"
            );
            self.cancel(client, id, CancelCode::TOO_MANY, reason.clone());
            self.download_refused(client, id, name, reason);
            return;
        }
        if let Some((n, share)) = self.address_download_share(client) {
            let downloads = count(n, "download", "downloads");
            let reason = format!(
                "your address has {downloads} running, as many as one address may have at once ({share} of the server's {max_all}); try again later"
            );
            self.cancel(client, id, CancelCode::TOO_MANY, reason.clone());
            self.download_refused(client, id, name, reason);
            return;
        }
        if let Some(c) = self.conns.get_mut(&client) {
            c.downloads.push((id, Progress::new(now)));
        }
        self.events.push_back(HubEvent::DownloadRequested {
            client,
            id,
            name,
            offset,
        });
    }

    /// Tells the server's log that a download was refused (the client was
    /// told already).
    fn download_refused(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        reason: impl Into<String>,
    ) {
        self.events.push_back(HubEvent::DownloadRefused {
            client,
            id,
            name,
            reason: reason.into(),
        });
    }

    /// The server streams as many downloads as it does at once and
    /// `client` asks for one more: if `client`'s address holds less than
    /// its fair share of the slots (the cap over the addresses holding
    /// downloads, its own counted), the download of the address holding
    /// the most (more than its fair share) that has stalled longest
    /// (nothing acknowledged for [`DOWNLOAD_STALLED`]) is cancelled, and
    /// its slot is `client`'s. False when there is none to take.
    fn take_stalled_download(&mut self, client: ClientId, now: Instant) -> bool {
        let Some(mine) = self.address_of(client) else {
            return false;
        };
        let stall = DOWNLOAD_STALLED.min(self.limits.transfer_idle_timeout);
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for c in self.conns.values() {
            if let (Some(peer), false) = (c.peer, c.downloads.is_empty()) {
                *held.entry(address_key(peer)).or_default() += c.downloads.len();
            }
        }
        let addresses = held.len() + usize::from(!held.contains_key(&mine));
        let fair = (self.limits.max_downloads / addresses).max(1);
        if held.get(&mine).copied().unwrap_or(0) >= fair {
            return false;
        }
        let Some(most) = held
            .iter()
            .filter(|(a, _)| **a != mine)
            .map(|(_, n)| *n)
            .max()
            .filter(|n| *n > fair)
        else {
            return false;
        };
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.peer
                    .is_some_and(|p| held.get(&address_key(p)) == Some(&most))
            })
            .filter(|(_, c)| c.peer.map(address_key) != Some(mine))
            .flat_map(|(who, c)| c.downloads.iter().map(move |(id, p)| (p.heard, *who, *id)))
            .filter(|(heard, _, _)| now.saturating_duration_since(*heard) >= stall)
            .min();
        let Some((_, who, id)) = victim else {
            return false;
        };
        self.download_finished(who, id);
        self.cancel(
            who,
            id,
            CancelCode::TOO_MANY,
            format!(
                "download stopped: nothing acknowledged for {} s while the server was sending as many files as it sends at once, and your address held the most of them; its slot went to another address's download",
                stall.as_secs_f64()
            ),
        );
        self.events.push_back(HubEvent::DownloadPreempted {
            client: who,
            id,
            for_client: client,
        });
        self.events
            .push_back(HubEvent::DownloadCancelled { client: who, id });
        true
    }

    /// True when `client` may start one more transfer; else it is told the
    /// limit, with a `Cancel` of transfer `id`.
    pub(super) fn has_transfer_slot(&mut self, client: ClientId, id: TransferId) -> bool {
        let max = self.limits.max_transfers;
        let busy = self
            .conns
            .get(&client)
            .map_or(0, |c| c.downloads.len() + c.pushes);
        if busy < max {
            return true;
        }
        self.cancel(
            client,
            id,
            CancelCode::TOO_MANY,
            format!("at most {max} transfers at once"),
        );
        false
    }

    /// A client picked a transfer id with the server's bit set, or one in use.
    pub(super) fn bad_transfer_id(&mut self, client: ClientId, id: TransferId, kind: &str) {
        self.violation(client, format!("{kind} id {} reused or invalid", id.0));
        self.cancel(
            client,
            id,
            CancelCode::CANCELLED,
            "transfer id already in use or invalid",
        );
    }

    /// Answers a [`HubEvent::FilesRequested`] with the shared folder's files.
    /// A long list is split over several frames that each fit the frame limit.
    pub fn answer_files(&mut self, client: ClientId, request: FilesRequest, files: Vec<FileEntry>) {
        if !self.conns.contains_key(&client) {
            return;
        }
        // A long list costs more than the request paid for.
        self.charge_extra(client, Cost::request(files.len()), Cost::request(0));
        match request {
            FilesRequest::Access => self.send(
                client,
                ServerMessage::FilesAccess {
                    count: files.len() as u64,
                },
            ),
            FilesRequest::List => {
                // Each entry takes at most 1 + 255 + 8 bytes.
                let per_frame = ((self.limits.max_frame as usize).saturating_sub(16) / 264).max(1);
                let mut files = files.into_iter().peekable();
                loop {
                    let part: Vec<FileEntry> = files.by_ref().take(per_frame).collect();
                    let last = files.peek().is_none();
                    self.send(
                        client,
                        ServerMessage::FileList(FileListPart { files: part, last }),
                    );
                    if last {
                        break;
                    }
                }
            }
        }
    }

    /// Answers a [`HubEvent::FilesRequested`] when the server cannot read
    /// its shared folder now (removed, or its permissions changed while
    /// the server runs): the client is told so in a
    /// [`NoticeCode::FAILED`] notice, then answered as for an empty
    /// folder, so that it is not left waiting. Why the folder cannot be
    /// read is the server's log's to say, not the users'.
    pub fn answer_files_unavailable(&mut self, client: ClientId, request: FilesRequest) {
        if !self.conns.contains_key(&client) {
            return;
        }
        self.notice(
            client,
            NoticeCode::FAILED,
            "the server cannot read its shared folder now: no file can be listed or downloaded until its operator fixes it",
        );
        self.answer_files(client, request, Vec::new());
    }

    /// Starts a download the server could open: sends the `FileStart`. The
    /// server then streams the chunks itself (with [`Outgoing`](crate::Outgoing))
    /// and calls [`download_finished`](Hub::download_finished).
    /// Returns the offset to stream from: the one asked for, or 0 when it
    /// was past the end of the file.
    pub fn accept_download(
        &mut self,
        client: ClientId,
        id: TransferId,
        name: FileName,
        size: u64,
        offset: u64,
    ) -> Option<u64> {
        let offset = if offset > size { 0 } else { offset };
        let c = self.conns.get_mut(&client)?;
        let (_, progress) = c.downloads.iter_mut().find(|(d, _)| *d == id)?;
        progress.started(offset, size);
        self.send(
            client,
            ServerMessage::FileStart(FileStart {
                id,
                name,
                size,
                offset,
                origin: Origin::Download,
            }),
        );
        Some(offset)
    }

    /// The server read `entries` entries of its shared folder to look for
    /// the name of a download of `client`'s (a name not found as it was
    /// asked for is looked for under another Unicode encoding): that
    /// costs what a `FilesAccess` of that folder costs, beyond the one
    /// message the `Download` paid, so that asking for names that are not
    /// there cannot make the server read a big folder for a message each.
    /// At most half the flood timeout's worth of the rate, though: the
    /// charge comes after the client's next frames may have been read, and
    /// a debt of the flood timeout's worth would cut off as a flood a user
    /// who asked for one missing name and then chatted.
    pub fn charge_folder_search(&mut self, client: ClientId, entries: usize) {
        if !self.conns.contains_key(&client) {
            return;
        }
        let most =
            f64::from(self.limits.rate_per_sec) * self.limits.flood_timeout.as_secs_f64() / 2.0;
        let mut cost = Cost::request(entries);
        cost.messages = cost.messages.min(1.0 + most);
        self.charge_extra(client, cost, Cost::request(0));
    }

    /// Refuses a requested download (missing, forbidden, unreadable).
    pub fn refuse_download(
        &mut self,
        client: ClientId,
        id: TransferId,
        code: CancelCode,
        reason: impl Into<String>,
    ) {
        self.download_finished(client, id);
        if self.conns.contains_key(&client) {
            self.cancel(client, id, code, reason);
        }
    }

    /// The server finished (or gave up) streaming a download: frees its slot.
    pub fn download_finished(&mut self, client: ClientId, id: TransferId) {
        if let Some(c) = self.conns.get_mut(&client) {
            let Some(at) = c.downloads.iter().position(|(d, _)| *d == id) else {
                return;
            };
            // The acks of its last window may still be on their way.
            let ended = c.downloads.swap_remove(at);
            c.ended_downloads.retain(|(d, _)| *d != id);
            if c.ended_downloads.len() >= ENDED_KEPT {
                c.ended_downloads.pop_front();
            }
            c.ended_downloads.push_back(ended);
        }
    }

    /// Whether `client`'s ack of `offset` for download `id` is progress
    /// of a download of its that runs or just ended (a frame of a
    /// download at full speed, free; any other ack costs rate budget).
    pub(super) fn ack_moves_on(&self, client: ClientId, id: TransferId, offset: u64) -> bool {
        let Some(c) = self.conns.get(&client) else {
            return false;
        };
        c.downloads
            .iter()
            .chain(&c.ended_downloads)
            .find(|(d, _)| *d == id)
            .is_some_and(|(_, p)| p.moved_on_by(offset, self.limits.chunk_size))
    }

    /// `client` acknowledged download `id` up to `offset`. An ack for a
    /// download that just ended is not an error.
    pub(super) fn download_acked(
        &mut self,
        client: ClientId,
        id: TransferId,
        offset: u64,
        now: Instant,
    ) {
        let chunk_size = self.limits.chunk_size;
        let Some(c) = self.conns.get_mut(&client) else {
            return;
        };
        if let Some((_, progress)) = c.downloads.iter_mut().find(|(d, _)| *d == id) {
            progress.acked(offset, chunk_size, now);
            self.events
                .push_back(HubEvent::DownloadAcked { client, id, offset });
        } else if let Some((_, progress)) = c.ended_downloads.iter_mut().find(|(d, _)| *d == id) {
            progress.acked(offset, chunk_size, now);
        }
    }

    /// Downloads running over all clients (for the server-wide cap).
    /// When `client`'s address already runs its share of the download
    /// slots (three quarters, so that one machine opening many connections
    /// cannot keep everyone else's downloads out): how many it runs, and the
    /// share. Connections with no known address are not counted.
    fn address_download_share(&self, client: ClientId) -> Option<(usize, usize)> {
        let max_all = self.limits.max_downloads;
        let share = max_all - max_all / 4;
        let peer = self.address_of(client)?;
        let n: usize = self
            .conns
            .values()
            .filter(|c| c.peer.map(address_key) == Some(peer))
            .map(|c| c.downloads.len())
            .sum();
        (n >= share).then_some((n, share))
    }

    fn running_downloads(&self) -> usize {
        self.conns.values().map(|c| c.downloads.len()).sum()
    }

    /// Ends the downloads whose client acknowledged nothing for the idle
    /// timeout: the client gets a `Cancel`, the server a
    /// [`HubEvent::DownloadCancelled`].
    pub(super) fn expire_downloads(&mut self, now: Instant) {
        let idle = self.limits.transfer_idle_timeout;
        let mut late: Vec<(ClientId, TransferId)> = self
            .conns
            .iter()
            .flat_map(|(client, c)| {
                c.downloads
                    .iter()
                    .filter(|(_, p)| now.saturating_duration_since(p.heard) >= idle)
                    .map(|(id, _)| (*client, *id))
            })
            .collect();
        late.sort_unstable();
        for (client, id) in late {
            self.download_finished(client, id);
            self.cancel(
                client,
                id,
                CancelCode::TIMED_OUT,
                format!(
                    "download stopped: nothing acknowledged for {} s",
                    idle.as_secs_f64()
                ),
            );
            self.events
                .push_back(HubEvent::DownloadCancelled { client, id });
        }
    }

    /// When the next download runs out of idle time.
    pub(super) fn download_deadline(&self) -> Option<Instant> {
        let idle = self.limits.transfer_idle_timeout;
        self.conns
            .values()
            .flat_map(|c| c.downloads.iter().map(|(_, p)| p.heard + idle))
            .min()
    }
}

/// `n` and the noun, singular for 1: "1 file", "2 files".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
