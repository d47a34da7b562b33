//! Target `cap_token`: capability tokens as a client presents them, and tokens built from
//! arbitrary caveats.
//!
//! The first byte picks the mode. Text mode: the rest is the `Authorization` token text;
//! decoding never panics, a decoded token re-encodes to itself, and no token verifies under
//! two different root keys. Built mode: caveats, a nonce and a request drawn from the input;
//! a minted token decodes to itself (or is refused for too many caveats), verifies under its
//! root except for a caveat's own refusal, never under another root, stops verifying when a
//! caveat is dropped, and an added caveat only narrows what it allows.

use node::caps::{CAVEATS_MAX, CapError, Caveat, Intent, Token};

use super::input::Input;

const ROOT: [u8; 32] = [0x11; 32];
const OTHER_ROOT: [u8; 32] = [0x22; 32];

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let method = match input.byte() % 4 {
        0 => "PUT".to_string(),
        1 => "put".to_string(),
        2 => "GET".to_string(),
        _ => String::from_utf8_lossy(input.bytes(6)).into_owned(),
    };
    let size = (input.byte() & 1 == 1).then(|| input.u64() % 4096);
    let now_unix = input.u64() % 4096;
    let intent = Intent {
        method: &method,
        size,
        now_unix,
    };
    if mode & 1 == 0 {
        from_text(&String::from_utf8_lossy(input.rest()), &intent);
    } else {
        built(&mut input, &intent);
    }
}

fn mac_ok(r: &Result<Option<u64>, CapError>) -> bool {
    !matches!(r, Err(CapError::Invalid(_)))
}

fn from_text(text: &str, intent: &Intent<'_>) {
    let Ok(t) = Token::decode(text) else { return };
    assert!(t.caveats().len() <= CAVEATS_MAX);
    assert_eq!(
        Token::decode(&t.encode()).ok(),
        Some(t.clone()),
        "re-encoding changed it"
    );
    let (a, b) = (t.verify(&ROOT, intent), t.verify(&OTHER_ROOT, intent));
    assert!(
        !(mac_ok(&a) && mac_ok(&b)),
        "one token verifies under two roots"
    );
}

fn caveat(input: &mut Input<'_>) -> Caveat {
    match input.byte() % 3 {
        0 => Caveat::ExpiresAt(input.u64() % 8192),
        1 => {
            let n = usize::from(input.byte() % 3);
            let methods = (0..n)
                .map(|_| match input.byte() % 3 {
                    0 => "PUT".to_string(),
                    1 => "GET".to_string(),
                    _ => String::from_utf8_lossy(input.bytes(4)).into_owned(),
                })
                .collect();
            Caveat::Methods(methods)
        }
        _ => Caveat::MaxBytes(input.u64() % 8192),
    }
}

fn built(input: &mut Input<'_>, intent: &Intent<'_>) {
    let mut nonce = [0u8; 16];
    for x in &mut nonce {
        *x = input.byte();
    }
    let n = usize::from(input.byte()) % (CAVEATS_MAX + 4);
    let caveats: Vec<Caveat> = (0..n).map(|_| caveat(input)).collect();
    let t = Token::mint(&ROOT, nonce, caveats.clone());
    assert_eq!(t.caveats(), &caveats[..]);
    match Token::decode(&t.encode()) {
        Ok(back) => assert_eq!(back, t),
        Err(e) => assert!(
            caveats.len() > CAVEATS_MAX || t.encode().len() > node::caps::TOKEN_LEN_MAX,
            "a minted token was refused: {e}"
        ),
    }
    let verdict = t.verify(&ROOT, intent);
    assert!(
        mac_ok(&verdict),
        "a minted token fails its own root: {verdict:?}"
    );
    assert!(
        !mac_ok(&t.verify(&OTHER_ROOT, intent)),
        "verifies under another root"
    );
    if let Some((_, fewer)) = caveats.split_last() {
        let dropped = Token::mint(&ROOT, nonce, fewer.to_vec());
        // Same caveats but the last, with the longer token's tag: a forged widening.
        if let Some(forged) = with_tag_of(&dropped, &t) {
            assert!(
                !mac_ok(&forged.verify(&ROOT, intent)),
                "a dropped caveat still verifies"
            );
        }
    }
    let narrower = t.clone().attenuate(caveat(input));
    let after = narrower.verify(&ROOT, intent);
    assert!(mac_ok(&after), "attenuation broke the chain: {after:?}");
    if let Ok(limit) = after {
        let before = verdict.unwrap_or_else(|e| panic!("a caveat widened a refusal ({e})"));
        match (before, limit) {
            (Some(b), Some(a)) => assert!(a <= b, "attenuation raised the byte limit"),
            (Some(b), None) => panic!("attenuation removed the byte limit {b}"),
            _ => {}
        }
    }
}

/// `shorter`'s caveats with `longer`'s tag, through the text form (the only way a client
/// can present a token): what someone would send after deleting a caveat. Tags are not
/// public; postcard writes a token's tag last, as 32 raw bytes.
fn with_tag_of(shorter: &Token, longer: &Token) -> Option<Token> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = |t: &Token| {
        URL_SAFE_NO_PAD
            .decode(t.encode().trim_start_matches("mn1."))
            .ok()
    };
    let (long, mut short) = (raw(longer)?, raw(shorter)?);
    let (tag_at, from) = (short.len().checked_sub(32)?, long.len().checked_sub(32)?);
    short[tag_at..].copy_from_slice(&long[from..]);
    Token::decode(&format!("mn1.{}", URL_SAFE_NO_PAD.encode(&short))).ok()
}
