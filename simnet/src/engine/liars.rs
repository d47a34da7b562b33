//! The swarm's lying nodes: what a liar answers instead of the truth.
//!
//! A liar runs the real state machine (it looks up, stores and announces honestly, so its
//! own state is honest) but every FIND_NODE or GET_PROVIDERS answer it sends is made up:
//! up to k contacts, each a random id at a random slot (nobody there has that id), the id
//! of a crashed node, or the liar itself (many times over); and GET_PROVIDERS answers also
//! claim provider records (the liar and random ids) for keys it does not hold. Each lie is
//! drawn from the seed's [`Stream::Liar`] stream at the liar's slot and the engine's event
//! number, so a seed replays the same lies.

use overlay::{Key, Request, Response};
use rand::Rng;

use super::Sim;
use crate::peer::SimPeer;
use crate::seed::{self, Stream};

impl Sim {
    /// The answer liar `slot` sends to `request`.
    pub(super) fn lie(&self, slot: u32, request: &Request) -> Response<SimPeer> {
        let mut rng = seed::rng(self.sc.seed, Stream::Liar, slot.into(), self.events);
        let me = self.peer_of(slot);
        let crashed: Vec<SimPeer> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                s.dht.is_none() && s.inc > 0
            })
            .map(|i| self.peer_of(i))
            .collect();
        let n = self.slots.len().max(1) as u32;
        let k = self.sc.dht.k;
        let contacts = |rng: &mut seed::SimRng| -> Vec<SimPeer> {
            (0..rng.gen_range(1..=k))
                .map(|_| match rng.gen_range(0..3) {
                    0 => {
                        let key = Key::random(rng);
                        SimPeer::new(key, rng.gen_range(0..n))
                    }
                    1 if !crashed.is_empty() => crashed[rng.gen_range(0..crashed.len())],
                    _ => me,
                })
                .collect()
        };
        match request {
            Request::Ping => Response::Pong,
            Request::AddProvider(_) => Response::Added,
            Request::FindNode(_) => Response::Nodes(contacts(&mut rng)),
            Request::GetProviders(_) => {
                let closer = contacts(&mut rng);
                let mut providers = vec![me];
                for _ in 0..rng.gen_range(0..3) {
                    let key = Key::random(&mut rng);
                    providers.push(SimPeer::new(key, rng.gen_range(0..n)));
                }
                Response::Providers { closer, providers }
            }
        }
    }
}
