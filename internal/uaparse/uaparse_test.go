package uaparse

import "testing"

func TestParseRealUserAgents(t *testing.T) {
	cases := []struct {
		name, ua            string
		hints               map[string]string
		device, os, browser string
	}{
		{"edge windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", nil, Desktop, "windows", "edge"},
		{"chrome android", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36", nil, Mobile, "android", "chrome"},
		{"safari iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1", nil, Mobile, "ios", "safari"},
		{"safari ipad", "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1", nil, Tablet, "ios", "safari"},
		{"firefox linux", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", nil, Desktop, "linux", "firefox"},
		{"safari mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", nil, Desktop, "macos", "safari"},
		{"chrome os", "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", nil, Desktop, "chromeos", "chrome"},
		{"galaxy tab", "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36", nil, Tablet, "android", "samsung"},
		{"firefox ios", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15", nil, Mobile, "ios", "firefox"},
		{"opera", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0", nil, Desktop, "windows", "opera"},
		{"headless chrome", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36", nil, Desktop, "linux", "chrome"},
		{"samsung tizen tv", "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36", nil, TV, "tizen", "safari"},
		{"lg webos tv", "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 Safari/537.36 WebAppManager", nil, TV, "webos", "chrome"},
		{"fire tv", "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7233) AppleWebKit/537.36 (KHTML, like Gecko) Silk/112.5.1 like Chrome/112.0.5615.213 Safari/537.36", nil, TV, "android", "silk"},
		{"chromecast", "Mozilla/5.0 (X11; Linux aarch64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 CrKey/1.56.500000 DeviceType/AndroidTV", nil, TV, "linux", "chrome"},
		{"apple tv", "AppleTV11,1/11.1", nil, TV, "tvos", "other"},
		{"googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", nil, Bot, "other", "googlebot"},
		{"curl", "curl/8.5.0", nil, Bot, "other", "curl"},
		{"go client", "Go-http-client/1.1", nil, Bot, "other", "go-http-client"},
		{"frozen chrome ua with hints", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
			map[string]string{"sec-ch-ua": `"Not_A Brand";v="8", "Chromium";v="120", "Microsoft Edge";v="120"`, "sec-ch-ua-mobile": "?1", "sec-ch-ua-platform": `"Android"`}, Mobile, "android", "edge"},
		{"hints only platform", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
			map[string]string{"sec-ch-ua-platform": `"Chrome OS"`, "sec-ch-ua-mobile": "?0"}, Desktop, "chromeos", "chrome"},
		{"empty", "", nil, Unknown, Unknown, Unknown},
	}
	for _, c := range cases {
		got := Parse(c.ua, c.hints)
		want := Info{Device: c.device, OS: c.os, Browser: c.browser}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) Safari/604.1", `"Chromium";v="1"`)
	f.Add("", "")
	f.Add("\x00\xff(((;;", "\"")
	f.Fuzz(func(t *testing.T, ua, brands string) {
		info := Parse(ua, map[string]string{"sec-ch-ua": brands})
		for _, v := range []string{info.Device, info.OS, info.Browser} {
			if v == "" || len(v) > 64 {
				t.Fatalf("bad value %q for %q", v, ua)
			}
		}
	})
}
