module spire-pqc.local/tests/gotls

go 1.26

require github.com/spiffe/go-spiffe/v2 v2.8.1
