//! The admin plane apart from the public edge: operator routes answer on `--admin` only,
//! the public listener answers 404 for them, and `--admin off` serves no admin plane.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use testing::node::AdminSpec;
use testing::{Mesh, NodeProcess, NodeSpec};

const START: Duration = Duration::from_secs(10);

#[test]
fn operator_routes_answer_on_the_admin_plane_only() {
    // Two nodes, so a lookup has someone to ask.
    let mut mesh = Mesh::start(2, |_, _| {}).unwrap();
    mesh.wait_ready(START).unwrap();
    let node = &mesh.nodes[1];
    let key = "00".repeat(32);
    for path in ["/v1/routing".to_string(), format!("/v1/lookup/{key}")] {
        let public = node.get(&path).unwrap();
        assert_eq!(public.status, 404, "public {path}: {}", public.body);
        let admin = node.admin_get(&path).unwrap();
        assert_eq!(admin.status, 200, "admin {path}: {}", admin.body);
    }
    // The public edge keeps what load balancers and browsers need.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status"] {
        assert_eq!(node.get(path).unwrap().status, 200, "{path}");
    }
    // The node records where its admin plane is, for the operator commands.
    let recorded = std::fs::read_to_string(node.data_dir().join("admin.addr")).unwrap();
    assert_eq!(recorded.trim(), node.admin().unwrap().to_string());
}

#[test]
fn by_default_the_admin_plane_is_on_a_free_loopback_port() {
    let mut spec = NodeSpec::new("admin-default");
    spec.admin = AdminSpec::Unset;
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_ready(START).unwrap();
    let recorded = std::fs::read_to_string(node.data_dir().join("admin.addr")).unwrap();
    let addr: SocketAddr = recorded.trim().parse().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
    let r = testing::http::get(addr, "/v1/routing", Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn admin_off_serves_no_admin_plane() {
    let mut spec = NodeSpec::new("admin-off");
    spec.admin = AdminSpec::Unset;
    spec.args = vec!["--admin".into(), "off".into()];
    let mut node = NodeProcess::start(spec).unwrap();
    node.wait_ready(START).unwrap();
    assert!(!node.data_dir().join("admin.addr").exists());
    assert!(node.log().contains("admin=off"), "{}", node.log());
    assert_eq!(node.get("/v1/routing").unwrap().status, 404);
}
