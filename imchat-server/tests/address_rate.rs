//! The rate the connections of one address share, against the real
//! `imchat-server` binary on 127.0.0.1 with a port the OS picks: it slows
//! what costs (chat, requests), never a download of that address. Each
//! test bounds its waits and kills what it started by its handle.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use imchat_core::{
    ChatKind, ClientMessage, Encode, FileName, Incoming, Recipient, RoutedChat, ServerMessage,
    TransferId, Username, PROTOCOL_VERSION,
};

mod common;

use common::peer::Peer;
use common::{Server, WAIT};

type Raw = Peer<TcpStream>;

fn join(addr: SocketAddr, name: &str) -> Raw {
    let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut r = Peer::new(stream);
    r.send(&ClientMessage::Hello {
        resume: None,
        version: PROTOCOL_VERSION,
        username: Username::new(name).unwrap(),
    });
    r.wait_for(|m| matches!(m, ServerMessage::Welcome { .. }));
    r
}

/// A connection that sends chat lines as fast as the server reads them,
/// and reads (and drops) all it is sent, until `stop` or [`WAIT`].
fn flood(r: Raw, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    let deadline = Instant::now() + WAIT;
    let writer = r.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reader = r.stream;
    let line = ClientMessage::Chat {
        client_id: 0,
        kind: ChatKind::Text,
        to: Recipient::Everyone,
        text: "x".into(),
    }
    .to_frame();
    let (stop_w, stop_r) = (stop.clone(), stop.clone());
    let write = thread::spawn(move || {
        let mut writer = writer;
        let mut sent = 0;
        while !stop_w.load(Ordering::Relaxed) && Instant::now() < deadline {
            // A write that times out may have sent part of a frame: the
            // rest goes first.
            while sent < line.len() && Instant::now() < deadline {
                match writer.write(&line[sent..]) {
                    Ok(0) | Err(_) if stop_w.load(Ordering::Relaxed) => return,
                    Ok(n) => sent += n,
                    Err(_) => {}
                }
            }
            sent = 0;
        }
    });
    let read = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop_r.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok(0) = reader.read(&mut buf) {
                return;
            }
        }
    });
    vec![write, read]
}

fn file_of(dir: &Path, name: &str, mib: usize) {
    let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join(name), &data).unwrap();
}

/// The rates of the server below: a line a second per connection, and
/// the address's share twice that.
const RATE: u32 = 1;

/// Two connections of 127.0.0.1 flood it with chat, so that the rate
/// their address shares stays in debt; a third connection of that
/// address downloads 4 MiB meanwhile, acking each chunk as a client
/// must. Its acks cost nothing: read only when the address was out of
/// debt (about twice a second here), the download took over 8 s (a debug
/// build); handled at once, it takes well under a tenth of a second.
/// The flood is still slowed to the address's rate.
#[test]
fn a_download_goes_on_at_full_speed_while_its_address_floods() {
    let rate = RATE.to_string();
    let srv = Server::start_with(
        &[
            "--rate-per-sec",
            &rate,
            "--rate-burst",
            &rate,
            // The flood goes on for the whole test.
            "--flood-timeout-secs",
            "600",
        ],
        |shared| file_of(shared, "big.bin", 4),
    );
    let mut reader = join(srv.addr, "reader");
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = ["flood_a", "flood_b"]
        .iter()
        .flat_map(|name| flood(join(srv.addr, name), &stop))
        .collect();
    // Both bursts are spent: the address is in debt from now on.
    let mut lines = 0;
    let start = Instant::now();
    while lines < 2 * RATE as usize {
        assert!(start.elapsed() < WAIT, "no flood seen");
        let _ = reader.pump();
        lines += reader
            .pending
            .drain(..)
            .filter(|m| matches!(m, ServerMessage::Chat(RoutedChat { .. })))
            .count();
    }

    let id = TransferId(1);
    let start = Instant::now();
    reader.send(&ClientMessage::Download {
        id,
        name: FileName::new("big.bin").unwrap(),
        offset: 0,
    });
    let mut incoming = Incoming::new(id, 4 << 20);
    let mut flooded = 0;
    let done = loop {
        assert!(start.elapsed() < WAIT, "the download did not end");
        assert!(reader.pump(), "the reader was disconnected");
        let mut done = false;
        for m in reader.pending.drain(..) {
            match m {
                ServerMessage::Chunk(c) => {
                    incoming.accept(&c).unwrap();
                    let offset = c.offset + c.data.len() as u64;
                    let ack = ClientMessage::Ack { id: c.id, offset }.to_frame();
                    (&reader.stream).write_all(&ack).unwrap();
                }
                ServerMessage::End(e) => {
                    incoming.finish(&e).unwrap();
                    done = true;
                }
                ServerMessage::Cancel(c) => panic!("download cancelled: {c:?}"),
                ServerMessage::Chat(RoutedChat { .. }) => flooded += 1,
                _ => {}
            }
        }
        if done {
            break start.elapsed();
        }
    };
    assert!(
        done < Duration::from_millis(2500),
        "4 MiB took {done:?} while the address flooded"
    );
    // The flood itself is still held to the address's rate (twice one
    // client's), with a second's slack.
    let window = Duration::from_secs(1);
    let start = Instant::now();
    while start.elapsed() < window {
        let _ = reader.pump();
        flooded += reader
            .pending
            .drain(..)
            .filter(|m| matches!(m, ServerMessage::Chat(RoutedChat { .. })))
            .count();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let seconds = (done + start.elapsed()).as_secs_f64();
    let most = f64::from(2 * RATE) * (seconds + 1.0);
    assert!(
        (1.0..=most).contains(&(flooded as f64)),
        "{flooded} lines of the flood in {seconds} s"
    );
}
