//! Interop with real peers that nobody here wrote: curl `--tcp-fastopen`, a
//! Python client using `MSG_FASTOPEN`, and nginx with `listen ... fastopen=N`.
//! Each inside a private network namespace; each claim checked against the
//! kernel's counters too.

mod common;

use std::process::Command;

use common::*;

#[test]
fn curl_tcp_fastopen_against_tfo_serve_http() {
    if !have_tool("curl_interop", "curl") {
        return;
    }
    in_netns("curl_interop", 3, || {
        let mut server = Server::start(&["--http"]);
        let url = format!("http://{}/walkthrough", server.addr);
        let curl =
            || Command::new("curl").args(["-sS", "--tcp-fastopen", "-w", "\\n%{http_code}", &url]).output().unwrap();

        let before = counters();
        let first = curl();
        assert!(first.status.success(), "{}", stderr(&first));
        assert_eq!(server.next_connection()["data_in_syn"], false);
        let d1 = &counters() - &before;
        assert_eq!((d1.cookie_reqd, d1.passive), (1, 0), "{d1:?}");

        let before = counters();
        let second = curl();
        let body = stdout(&second);
        assert!(body.ends_with("\n200"), "{body}");
        assert!(body.starts_with("GET /walkthrough HTTP/1.1\r\n"), "the body echoes the request: {body}");
        assert!(body.contains("User-Agent: curl/"), "{body}");
        let log = server.next_connection();
        assert_eq!(log["data_in_syn"], true, "{log}");
        assert_eq!(log["http_status"], 200);
        let d2 = &counters() - &before;
        assert_eq!((d2.passive, d2.active), (1, 1), "{d2:?}");
    });
}

const PYTHON_CLIENT: &str = r#"
import socket, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.sendto(msg, socket.MSG_FASTOPEN, (host, port))
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.write(reply.decode())
"#;

#[test]
fn python_msg_fastopen_client_against_tfo_serve() {
    if !have_tool("python_interop", "python3") {
        return;
    }
    in_netns("python_interop", 3, || {
        let mut server = Server::start(&[]);
        let (host, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
        let python =
            |msg: &str| Command::new("python3").args(["-c", PYTHON_CLIENT, &host, &port, msg]).output().unwrap();

        let first = python("hello from python");
        assert_eq!(stdout(&first), "hello from python", "{}", stderr(&first));
        assert_eq!(server.next_connection()["data_in_syn"], false);

        let before = counters();
        let second = python("in the SYN");
        assert_eq!(stdout(&second), "in the SYN", "{}", stderr(&second));
        let log = server.next_connection();
        assert_eq!((log["data_in_syn"].as_bool(), log["bytes_in_syn"].as_u64()), (Some(true), Some(10)), "{log}");
        let d = &counters() - &before;
        assert_eq!((d.passive, d.active), (1, 1), "{d:?}");
    });
}

#[test]
fn tfo_send_against_nginx_fastopen() {
    if !have_tool("nginx_interop", "nginx") {
        return;
    }
    in_netns("nginx_interop", 3, || {
        let port = 8081;
        let listen = [format!("127.0.0.1:{port} fastopen=256")];
        let Some(nginx) = fastopen_lab::testing::Nginx::start("nginx_interop", &listen, "", "hello from nginx\n")
        else {
            return;
        };
        let addr = format!("127.0.0.1:{port}");
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let first = json(&run_tfo(&["send", &addr, "--data", request, "--json"]));
        assert_eq!(first["fail_reason"], "cookie_unavailable", "{first}");
        assert!(first["reply"].as_str().unwrap().ends_with("hello from nginx\n"), "{first}");

        let before = counters();
        let second = json(&run_tfo(&["send", &addr, "--data", request, "--json", "--method", "connect"]));
        assert_eq!(second["tfo_used"], true, "{second}");
        assert_eq!(second["bytes_in_syn"].as_u64(), Some(request.len() as u64));
        assert!(second["reply"].as_str().unwrap().starts_with("HTTP/1.1 200 OK"));
        let d = &counters() - &before;
        assert_eq!((d.passive, d.active), (1, 1), "{d:?}");
        drop(nginx);
    });
}
