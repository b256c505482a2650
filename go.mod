module github.com/zun-wsproxy/zun-wsproxy

go 1.24.0

require (
	github.com/coder/websocket v1.8.15
	github.com/go-sql-driver/mysql v1.10.1
	go.uber.org/goleak v1.3.0
)

require filippo.io/edwards25519 v1.2.0 // indirect
