package job

import "testing"

func TestIsSecretParam(t *testing.T) {
	secret := []string{
		// The examples.
		"authorization", "user[password]", "credentials", "session",
		// Passwords, secrets, tokens, credentials, sessions, signatures, cookies.
		"password", "new-password", "PASSWD", "passphrase", "passcode", "pass", "pwd", "db_pwd", "userpwd", "pin", "otp",
		"secret", "client_secret", "clientSecret", "secret_key", "data.password", "a[b][token]", "user.auth[pass]",
		"token", "access_token", "accessToken", "refresh-token", "id_token", "private_token", "X-Amz-Security-Token", "jwt",
		"credential", "X-Amz-Credential", "x_goog_credential", "session_id", "sessionid", "SessionId", "sid", "JSESSIONID", "PHPSESSID", "ASP.NET_SessionId",
		"signature", "X-Amz-Signature", "sig", "oauth_signature", "hmac", "cookie",
		// Keys and auth, as words or run together.
		"key", "api_key", "apiKey", "APIKey", "apikey", "api-key", "key1", "secretkey", "private_key", "AWSAccessKeyId",
		"auth", "auth_code", "authToken", "basicauth", "authentication", "authorization_code",
		// An OAuth authorization code.
		"code", "Code",
		// Percent-decoded names arrive here decoded.
		"user[api_key]",
	}
	public := []string{
		"", "page", "per_page", "q", "keyword", "keys", "author", "author_name", "design", "signup", "inside", "side",
		"zip_code", "country_code", "status_code", "state", "nonce", "client_id", "expires_in", "customer[id]",
		"filter.status", "sort", "mac_address", "passage", "count",
	}
	for _, n := range secret {
		if !IsSecretParam(n) {
			t.Errorf("IsSecretParam(%q) = false, want true", n)
		}
	}
	for _, n := range public {
		if IsSecretParam(n) {
			t.Errorf("IsSecretParam(%q) = true, want false", n)
		}
	}
}

// The reproductions, as URLs: each value is hidden, every other
// byte of the URL kept.
func TestRedactURLSecretNames(t *testing.T) {
	for in, want := range map[string]string{
		"https://h/x?authorization=Bearer%20t&a=1":        "https://h/x?authorization=REDACTED&a=1",
		"https://h/x?user[password]=hunter2&user[name]=u": "https://h/x?user[password]=REDACTED&user[name]=u",
		"https://h/x?user%5Bpassword%5D=hunter2":          "https://h/x?user%5Bpassword%5D=REDACTED",
		"https://h/x?credentials=c&session=s&page=2":      "https://h/x?credentials=REDACTED&session=REDACTED&page=2",
		"https://h/x?data.password=p;zip_code=1":          "https://h/x?data.password=REDACTED;zip_code=1",
		"https://h/x?page=2&sort=desc":                    "https://h/x?page=2&sort=desc",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// fragmentStarts names the first letter of every fragment.
func TestFragmentStarts(t *testing.T) {
	for _, f := range secretFragments {
		if fragmentStarts&(1<<(f[0]-'a')) == 0 {
			t.Errorf("fragment %q starts with a letter fragmentStarts lacks", f)
		}
	}
}
