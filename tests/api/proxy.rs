//! A TCP proxy in front of PostgreSQL that can misbehave as networks do: pass bytes,
//! delay them, swallow them (a blackhole: connections stay open, nothing arrives), or
//! reset every connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    /// Every chunk waits `delay_ms` before it is forwarded.
    Delay = 1,
    /// Nothing is forwarded; connections stay open.
    Blackhole = 2,
}

#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    resets: broadcast::Sender<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(Mode::Pass as u8)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            resets: broadcast::channel(4).0,
        };
        let me = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut reset = me.resets.subscribe();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = me.pipe(client_read, server_write) => {}
                        _ = me.pipe(server_read, client_write) => {}
                        _ = reset.recv() => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.set(Mode::Delay);
    }

    /// Closes every open connection (new ones pass as the mode says).
    pub fn reset_all(&self) {
        let _ = self.resets.send(());
    }

    async fn pipe(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match self.mode.load(Ordering::SeqCst) {
                m if m == Mode::Blackhole as u8 => continue,
                m if m == Mode::Delay as u8 => {
                    let ms = self.delay_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                _ => {}
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
