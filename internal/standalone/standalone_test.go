package standalone

import "testing"

func TestURLs(t *testing.T) {
	cases := []struct{ base, ws, web string }{
		{"ws://127.0.0.1:6784/", "ws://127.0.0.1:6784/?token=s%2Bcret&uuid=web", "http://127.0.0.1:6784/console?token=s%2Bcret"},
		{"wss://console.example.org/zun/", "wss://console.example.org/zun/?token=s%2Bcret&uuid=web", "https://console.example.org/zun/console?token=s%2Bcret"},
	}
	for _, c := range cases {
		ws, web := URLs(c.base, "s+cret", "web")
		if ws != c.ws || web != c.web {
			t.Errorf("URLs(%s) = %s, %s; want %s, %s", c.base, ws, web, c.ws, c.web)
		}
	}
}
