//! The blocking client engines on their own, against the server engine in a
//! private network namespace: an exchange (the request in the SYN once the
//! cookie is cached), a greeting read first (the cookie in a SYN without
//! data), and a cancelled token that stops an exchange at once.

mod common;

use std::time::{Duration, Instant};

use fastopen::Connector;
use fastopen_tools::echo::{Limits, Protocol};
use fastopen_tools::exchange::{self, exchange, ExchangeError, Until};
use fastopen_tools::greeting::read_greeting;

#[test]
fn an_exchange_rides_in_the_syn_once_the_cookie_is_cached() {
    if !fastopen_lab::testing::root_or_skip("engine_exchange") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let (addr, server) = common::server(Protocol::Http, Limits::default(), 2);
        let request = b"GET /x HTTP/1.1\r\nHost: e\r\n\r\n";
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let limits = exchange::Limits::new(Duration::from_secs(5), Until::HttpResponse);
            let ex = exchange(&Connector::new(), addr, request, Until::HttpResponse, &limits).unwrap();
            assert_eq!(fastopen_wire::http::status_code(&ex.reply), Some(200));
            assert!(ex.reply.ends_with(request), "the server echoes the request");
            assert!(ex.first_byte.unwrap() <= ex.total);
            outcomes.push(ex.outcome);
        }
        assert!(!outcomes[0].tfo_used() && outcomes[1].tfo_used(), "{outcomes:?}");
        server.join().unwrap();
    })
    .unwrap();
}

#[test]
fn a_greeting_comes_one_round_trip_sooner_with_the_cookie() {
    if !fastopen_lab::testing::root_or_skip("engine_greeting") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        let limits = Limits { banner: Some(b"220 engine ready\r\n"), ..Limits::default() };
        let (addr, _server) = common::server(Protocol::Raw, limits, 2);
        let mut greetings = Vec::new();
        for _ in 0..2 {
            let limits = exchange::Limits::new(Duration::from_secs(5), Until::FirstByte);
            greetings.push(read_greeting(&Connector::new(), addr, &limits).unwrap());
        }
        assert!(greetings.iter().all(|g| g.text == b"220 engine ready\r\n"));
        // The first connect requests a cookie; the second sends it in a SYN
        // without data, and the server, creating the connection on the SYN,
        // speaks right after its SYN-ACK.
        assert!(!greetings[0].outcome.cookie_only_syn, "{}", greetings[0].outcome);
        assert!(greetings[1].outcome.cookie_only_syn, "{}", greetings[1].outcome);
        assert!(greetings.iter().all(|g| g.round_trips().is_some()));
    })
    .unwrap();
}

#[test]
fn a_cancelled_token_stops_an_exchange_at_once() {
    if !fastopen_lab::testing::root_or_skip("engine_exchange_cancel") {
        return;
    }
    fastopen_lab::netns::run_in_private(3, || {
        // A server that never answers: a listener nobody accepts on.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let token = fastopen::Cancel::new().unwrap();
        token.cancel();
        let limits =
            exchange::Limits { token: Some(token), ..exchange::Limits::new(Duration::from_secs(30), Until::Eof) };
        let started = Instant::now();
        let err = exchange(&Connector::new(), addr, b"hello", Until::Eof, &limits).unwrap_err();
        assert!(matches!(err, ExchangeError::Cancelled(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    })
    .unwrap();
}
