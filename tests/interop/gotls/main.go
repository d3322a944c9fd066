// Command gotls is a Go crypto/tls peer for the channel interop tests: go-spiffe's tlsconfig
// (standard SPIFFE mTLS) with X25519MLKEM768 as the only key exchange, against our spiffe mode.
//
//	gotls server -svid svid.pem -key key.pem -bundle bundle.pem -peer spiffe://td/client [-curve mlkem|x25519]
//	gotls client -addr 127.0.0.1:port -svid ... -key ... -bundle ... -peer spiffe://td/server -line text [-curve ...]
//
// server listens on 127.0.0.1:0, prints "listening <port>", accepts one connection, echoes one line
// back and prints "curve <CurveID> <name>" and "peer <spiffe-id>". client sends -line, prints
// "echo <line>" and "curve <CurveID> <name>". Any failure is printed to stderr with exit status 1.
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type options struct {
	addr    string
	svid    string
	key     string
	bundle  string
	peer    string
	line    string
	curve   string
	timeout time.Duration
}

func parse(cmd string, args []string) options {
	var o options
	flags := flag.NewFlagSet(cmd, flag.ExitOnError)
	flags.StringVar(&o.addr, "addr", "127.0.0.1:0", "server: listen address; client: server address")
	flags.StringVar(&o.svid, "svid", "", "PEM X509-SVID chain (leaf first)")
	flags.StringVar(&o.key, "key", "", "PEM PKCS#8 private key of the SVID")
	flags.StringVar(&o.bundle, "bundle", "", "PEM X.509 bundle of the peer's trust domain")
	flags.StringVar(&o.peer, "peer", "", "the only SPIFFE ID the peer may have")
	flags.StringVar(&o.line, "line", "ping", "client: the line to send")
	flags.StringVar(&o.curve, "curve", "mlkem", "key exchange offered: mlkem (X25519MLKEM768) or x25519")
	flags.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after")
	_ = flags.Parse(args)
	return o
}

// config builds go-spiffe's mTLS config and restricts it to TLS 1.3 and one key exchange group.
func config(o options, server bool) (*tls.Config, error) {
	svid, err := x509svid.Load(o.svid, o.key)
	if err != nil {
		return nil, fmt.Errorf("load svid: %w", err)
	}
	peer, err := spiffeid.FromString(o.peer)
	if err != nil {
		return nil, fmt.Errorf("peer id: %w", err)
	}
	bundle, err := x509bundle.Load(peer.TrustDomain(), o.bundle)
	if err != nil {
		return nil, fmt.Errorf("load bundle: %w", err)
	}
	var c *tls.Config
	if server {
		c = tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeID(peer))
	} else {
		c = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(peer))
	}
	c.MinVersion = tls.VersionTLS13
	switch o.curve {
	case "mlkem":
		c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
	case "x25519":
		c.CurvePreferences = []tls.CurveID{tls.X25519}
	default:
		return nil, fmt.Errorf("unknown -curve %q", o.curve)
	}
	return c, nil
}

func printCurve(conn *tls.Conn) {
	id := conn.ConnectionState().CurveID
	fmt.Printf("curve %d %s\n", uint16(id), id)
}

func serve(o options) error {
	c, err := config(o, true)
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", o.addr, c)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
	raw, err := ln.Accept()
	if err != nil {
		return err
	}
	conn := raw.(*tls.Conn)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(o.timeout))
	if err := conn.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	peer, err := x509svid.IDFromCert(conn.ConnectionState().PeerCertificates[0])
	if err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if _, err := conn.Write([]byte(line)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	printCurve(conn)
	fmt.Printf("peer %s\n", peer)
	return conn.CloseWrite()
}

func connect(o options) error {
	c, err := config(o, false)
	if err != nil {
		return err
	}
	dialer := &net.Dialer{Timeout: o.timeout}
	conn, err := tls.DialWithDialer(dialer, "tcp", o.addr, c)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(o.timeout))
	if _, err := conn.Write([]byte(o.line + "\n")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	echo, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Printf("echo %s\n", strings.TrimRight(echo, "\n"))
	printCurve(conn)
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gotls server|client [flags]")
		os.Exit(2)
	}
	o := parse(os.Args[1], os.Args[2:])
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(o)
	case "client":
		err = connect(o)
	default:
		err = errors.New("unknown subcommand " + os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
