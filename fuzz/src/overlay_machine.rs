//! Target `overlay_machine`: the DHT state machine driven by arbitrary sequences of inputs,
//! as a hostile or broken network could deliver them.
//!
//! One `overlay::Dht` with a fixed seed and small limits (so queues, caps and buckets fill
//! within short inputs; the first byte also turns IP-diversity limits on or off), and a pool
//! of 24 peers spread over a few address groups. Each following step, picked by one byte,
//! is an inbound request from a pool peer, an answer (well-formed, of the wrong kind, or
//! naming arbitrary peers, ourselves included) to a request the machine sent, a failure or
//! an answer for an RPC it never sent, time moving forward and the timer firing, or a
//! command (lookups, providers, bootstrap, inserting or removing a peer). After every step
//! the transmits and events are drained and `check_invariants` must hold; time never goes
//! backwards and `poll_timeout` never asks to be called in the past.

use std::time::Duration;

use overlay::dht::{Dht, Request, Response, RpcFailure, RpcId};
use overlay::{Config, Instant, IpDiversity, IpGroup, Key, Peer};

use super::input::Input;

/// A pool peer: its DHT key, and the address group it is seen from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzPeer {
    key: Key,
    group: Option<IpGroup>,
}

impl Peer for FuzzPeer {
    fn key(&self) -> Key {
        self.key
    }
    fn ip_group(&self) -> Option<IpGroup> {
        self.group
    }
}

const POOL: u8 = 24;
const SEED: u64 = 0x0f0f_2024;
const STEPS_MAX: usize = 512;

fn key_of(i: u8) -> Key {
    Key(*blake3::hash(&[b'k', i]).as_bytes())
}

/// Pool peer `i % POOL`, seen from one of four groups (or none), as the input says.
fn peer(i: u8, g: u8) -> FuzzPeer {
    FuzzPeer {
        key: key_of(i % POOL),
        group: match g % 5 {
            4 => None,
            x => Some(u64::from(x)),
        },
    }
}

fn config(flags: u8) -> Config {
    Config {
        k: 4,
        alpha: 2,
        rpc_timeout: Duration::from_millis(500),
        replacement_cache_size: 2,
        liveness_interval: (flags & 2 == 0).then_some(Duration::from_secs(2)),
        liveness_probes_max: 2,
        liveness_spread: flags & 8 == 8,
        // Now and then queries run out of time before they finish.
        query_timeout: Duration::from_secs(if flags & 4 == 0 { 3 } else { 60 }),
        soft_timeout_min: Duration::from_millis(50),
        ip_diversity: (flags & 1 == 1).then_some(IpDiversity {
            per_bucket: 1,
            per_table: 3,
        }),
        provider_ttl: Duration::from_secs(20),
        provider_republish_interval: Duration::from_secs(8),
        providers_per_key_max: 2,
        provider_records_max: 6,
        queries_max: 3,
        lookup_rpcs_max: 12,
        lookup_candidates_max: 8,
        transmits_max: 16,
        rpcs_in_flight_max: 4,
        events_max: 16,
        rejoin_interval: Duration::from_secs(3),
        refresh_on_join_max: 2,
        ..Config::default()
    }
}

fn failure(b: u8) -> RpcFailure {
    match b % 3 {
        0 => RpcFailure::Peer,
        1 => RpcFailure::Refused,
        _ => RpcFailure::Local,
    }
}

fn request(input: &mut Input<'_>) -> Request {
    let key = key_of(input.byte());
    match input.byte() % 4 {
        0 => Request::Ping,
        1 => Request::FindNode(key),
        2 => Request::GetProviders(key),
        _ => Request::AddProvider(key),
    }
}

fn peers(input: &mut Input<'_>, local: &FuzzPeer) -> Vec<FuzzPeer> {
    let n = input.byte() % 8;
    (0..n)
        .map(|_| {
            let i = input.byte();
            // Now and then a contact naming the receiver itself.
            if i == 0xff {
                local.clone()
            } else {
                peer(i, input.byte())
            }
        })
        .collect()
}

fn response(input: &mut Input<'_>, local: &FuzzPeer) -> Response<FuzzPeer> {
    match input.byte() % 5 {
        0 => Response::Pong,
        1 => Response::Nodes(peers(input, local)),
        2 => Response::Providers {
            closer: peers(input, local),
            providers: peers(input, local),
        },
        3 => Response::Added,
        _ => Response::Refused,
    }
}

/// Runs one sequence; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let local = FuzzPeer {
        key: Key(*blake3::hash(b"local").as_bytes()),
        group: None,
    };
    let mut dht = Dht::new(Instant::ZERO, local.clone(), config(flags), SEED);
    let mut now = Instant::ZERO;
    let mut pending: Vec<RpcId> = Vec::new();
    let mut steps = 0;
    while !input.is_empty() && steps < STEPS_MAX {
        steps += 1;
        match input.byte() % 12 {
            0 | 1 => {
                let from = peer(input.byte(), input.byte());
                let req = request(&mut input);
                let _ = dht.handle_request(now, from, req);
            }
            2 | 3 if !pending.is_empty() => {
                let rpc = pending.remove(usize::from(input.byte()) % pending.len());
                let resp = response(&mut input, &local);
                dht.handle_response(now, rpc, resp);
            }
            4 if !pending.is_empty() => {
                let rpc = pending.remove(usize::from(input.byte()) % pending.len());
                dht.handle_rpc_failure(now, rpc, failure(input.byte()));
            }
            5 => {
                // An answer or a failure for an RPC that was never sent (or already settled).
                let rpc = RpcId(u64::from(input.u16()));
                if input.byte() & 1 == 0 {
                    let resp = response(&mut input, &local);
                    dht.handle_response(now, rpc, resp);
                } else {
                    dht.handle_rpc_failure(now, rpc, failure(input.byte()));
                }
                pending.retain(|p| *p != rpc);
            }
            6 | 7 => {
                let ms = u64::from(input.u16()) * 4;
                now = Instant::from_duration(now.as_duration() + Duration::from_millis(ms));
                dht.handle_timeout(now);
                drain(&mut dht, &mut pending, &local);
                // Nothing may be left due: a driver sleeping until a deadline in the past
                // would call straight back, and spin if nothing changed.
                if let Some(at) = dht.poll_timeout() {
                    assert!(
                        at > now,
                        "after handle_timeout({now:?}), still due at {at:?}"
                    );
                }
            }
            8 => {
                let _ = dht.find_node(now, key_of(input.byte()));
            }
            9 => {
                let key = key_of(input.byte());
                let _ = match input.byte() % 3 {
                    0 => dht.get_providers(now, key, usize::from(input.byte() % 4)),
                    1 => dht.start_providing(now, key),
                    _ => {
                        dht.stop_providing(&key);
                        Ok(overlay::QueryId(0))
                    }
                };
            }
            10 => {
                let contacts = peers(&mut input, &local);
                let _ = dht.bootstrap(now, contacts);
            }
            _ => {
                let p = peer(input.byte(), input.byte());
                match input.byte() % 3 {
                    0 => dht.insert_peer(now, p),
                    1 => dht.remove_peer(now, &p.key),
                    _ => dht.peer_lost(now, &p.key),
                }
            }
        }
        drain(&mut dht, &mut pending, &local);
        if let Err(e) = dht.check_invariants() {
            panic!("invariant broken after step {steps}: {e}");
        }
    }
    // Whatever is still pending times out in the end.
    let end = Instant::from_duration(now.as_duration() + Duration::from_secs(3600));
    dht.handle_timeout(end);
    drain(&mut dht, &mut pending, &local);
    if let Err(e) = dht.check_invariants() {
        panic!("invariant broken at the end: {e}");
    }
}

fn drain(dht: &mut Dht<FuzzPeer>, pending: &mut Vec<RpcId>, local: &FuzzPeer) {
    while let Some(t) = dht.poll_transmit() {
        assert_ne!(t.to.key, local.key, "a request to ourselves");
        assert!(!pending.contains(&t.rpc), "rpc id {:?} reused", t.rpc);
        pending.push(t.rpc);
    }
    // Answers the fuzzer never gives are left to time out inside the machine; keep the
    // list of those it may still answer short.
    if pending.len() > 64 {
        pending.drain(..pending.len() - 64);
    }
    while dht.poll_event().is_some() {}
}
