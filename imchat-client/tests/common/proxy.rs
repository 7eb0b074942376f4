//! A TCP forwarder on loopback for the end-to-end tests: a network that
//! the test can cut without stopping the processes at either end.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A TCP forwarder on loopback that the test controls: it forwards each
/// connection to the target, cuts every connection on demand (the
/// processes at both ends live on), and while it has no target it closes
/// what it accepts at once (a server that cannot be reached).
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    target: Option<SocketAddr>,
    links: Vec<TcpStream>,
}

impl Proxy {
    pub fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(ProxyState {
            target: Some(to),
            links: Vec::new(),
        }));
        let shared = state.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Some(target) = shared.lock().unwrap().target else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                {
                    let mut st = shared.lock().unwrap();
                    st.links.push(client.try_clone().expect("clone"));
                    st.links.push(server.try_clone().expect("clone"));
                }
                thread::spawn(move || pipe(client, server));
                thread::spawn(move || pipe(s2, c2));
            }
        });
        Proxy { addr, state }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every connection made so far, data in flight with them.
    pub fn cut(&self) {
        for s in self.state.lock().unwrap().links.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Where new connections go; `None`: closed at once.
    pub fn set_target(&self, to: Option<SocketAddr>) {
        self.state.lock().unwrap().target = to;
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _: io::Result<()> = from.shutdown(Shutdown::Both);
}
