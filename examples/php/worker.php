<?php
// A Prack worker for the PHP command line: plain streams, no extensions
// beyond what every php-cli has (pcntl, when present, makes SIGTERM graceful).
//
//   php examples/php/worker.php http://127.0.0.1:4242   (or PRACK_API=...; that is the default)
//
// It long-polls GET /api/v1/request, runs app() on the request and posts the
// answer to POST /api/v1/response, over one keep-alive connection. SIGTERM
// (or Ctrl-C) abandons an idle poll at once, finishes a request already
// taken, and exits 0.

declare(strict_types=1);

const FIRST_DELAY = 0.1;    // seconds of backoff after the first failure
const MAX_DELAY = 5.0;      // and its ceiling
const CALL_TIMEOUT = 60.0;  // a poll lasts api.poll_timeout (5 s by default)

/**
 * The application. $env is the Prack (Rack/CGI) environment, shaped like
 * $_SERVER (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_* ...), its values
 * the bytes the client sent; $body is the raw request body.
 * Returns [status, headers, body]; a header may hold a list of values.
 */
function app(array $env, string $body): array
{
    $path = $env['PATH_INFO'];
    switch ($path) {
        case '/':
            return [200, ['Content-Type' => 'text/plain; charset=utf-8'], "Hello from PHP ✓\n"];
        case '/echo':
            $headers = [
                'Content-Type' => 'application/octet-stream',
                'X-Echo-Method' => $env['REQUEST_METHOD'],
                'X-Echo-Path' => $path,
                'X-Echo-Query' => $env['QUERY_STRING'],
            ];
            if (isset($env['HTTP_X_TEST'])) {
                $headers['X-Echo-Header'] = $env['HTTP_X_TEST'];
            }
            return [200, $headers, $body];
        case '/cookies':
            return [200, [
                'Content-Type' => 'text/plain; charset=utf-8',
                'Set-Cookie' => ['a=1; Path=/', 'b=2; Path=/'],
            ], "two cookies\n"];
        case '/binary':
            return [200, ['Content-Type' => 'application/octet-stream'], implode('', array_map('chr', range(0, 255)))];
        default:
            return [404, ['Content-Type' => 'text/plain; charset=utf-8'], "Not found: $path\n"];
    }
}

// Prack carries header bytes in JSON as ISO-8859-1 characters (U+0000-U+00FF).
// These two map between those characters (in PHP's UTF-8) and the raw bytes.
function latin1_to_bytes(string $s): string
{
    return preg_replace_callback('/[\xC2\xC3][\x80-\xBF]/',
        fn($m) => chr(((ord($m[0][0]) & 0x03) << 6) | (ord($m[0][1]) & 0x3F)), $s);
}

function bytes_to_latin1(string $s): string
{
    return preg_replace_callback('/[\x80-\xFF]/',
        fn($m) => chr(0xC0 | (ord($m[0]) >> 6)) . chr(0x80 | (ord($m[0]) & 0x3F)), $s);
}

function say(string $msg): void
{
    fwrite(STDERR, "php worker: $msg\n");
}

final class Stopping extends Exception {}
/** The server closed the connection before its answer came. */
final class ConnectionLost extends RuntimeException {}

/** A minimal HTTP/1.1 client for one keep-alive connection to the API. */
final class ApiConnection
{
    private $sock = null;
    private string $buf = '';

    public function __construct(private string $host, private int $port) {}

    /** [status, body]. $abortable: give up (throw Stopping) when $stopping is set. */
    public function call(string $method, string $path, ?string $payload, bool $abortable): array
    {
        $reused = $this->sock !== null;
        try {
            return $this->attempt($method, $path, $payload, $abortable);
        } catch (ConnectionLost $e) {
            if (!$reused) {
                throw $e;
            }
            // The server closed this kept-alive connection before answering
            // (a restart, or its limits on idle connections): once more on a
            // new one. A post sent twice is harmless (the second gets 404).
            return $this->attempt($method, $path, $payload, $abortable);
        }
    }

    private function attempt(string $method, string $path, ?string $payload, bool $abortable): array
    {
        if ($this->sock === null) {
            $sock = @stream_socket_client("tcp://{$this->host}:{$this->port}", $errno, $errstr, 5.0);
            if ($sock === false) {
                throw new RuntimeException($errstr !== '' ? $errstr : "connect error $errno");
            }
            $this->sock = $sock;
            $this->buf = '';
        }
        try {
            $head = "$method $path HTTP/1.1\r\nHost: {$this->host}:{$this->port}\r\n";
            if ($payload !== null) {
                $head .= "Content-Type: application/json\r\nContent-Length: " . strlen($payload) . "\r\n";
            }
            $this->write($head . "\r\n" . ($payload ?? ''));
            return $this->readResponse($abortable);
        } catch (Throwable $e) {
            $this->close();
            throw $e;
        }
    }

    public function close(): void
    {
        if ($this->sock !== null) {
            fclose($this->sock);
            $this->sock = null;
        }
    }

    private function write(string $data): void
    {
        while ($data !== '') {
            $n = @fwrite($this->sock, $data);
            if ($n === false || $n === 0) {
                throw new ConnectionLost('connection lost while sending');
            }
            $data = substr($data, $n);
        }
    }

    /** Appends at least one byte to the buffer, waiting at most until $deadline. */
    private function fill(float $deadline, bool $abortable): void
    {
        global $stopping;
        while (true) {
            if ($abortable && $stopping) {
                throw new Stopping();
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new RuntimeException('no answer in time');
            }
            $r = [$this->sock];
            $w = $e = null;
            // A signal interrupts the wait (false): loop to look at $stopping.
            $ready = @stream_select($r, $w, $e, (int)$left, (int)(fmod($left, 1.0) * 1e6));
            if ($ready) {
                $chunk = fread($this->sock, 65536);
                if ($chunk === false || $chunk === '') {
                    throw new ConnectionLost('connection closed by the server');
                }
                $this->buf .= $chunk;
                return;
            }
        }
    }

    private function readResponse(bool $abortable): array
    {
        $deadline = microtime(true) + CALL_TIMEOUT;
        while (($end = strpos($this->buf, "\r\n\r\n")) === false) {
            $this->fill($deadline, $abortable);
        }
        $lines = explode("\r\n", substr($this->buf, 0, $end));
        $this->buf = substr($this->buf, $end + 4);
        if (!preg_match('#^HTTP/1\.[01] (\d{3})#', $lines[0], $m)) {
            throw new RuntimeException('not an HTTP response: ' . $lines[0]);
        }
        $status = (int)$m[1];
        $headers = [];
        foreach (array_slice($lines, 1) as $line) {
            [$name, $value] = array_pad(explode(':', $line, 2), 2, '');
            $headers[strtolower(trim($name))] = trim($value);
        }
        // From here on a request in the answer is ours to serve: no aborting.
        if (isset($headers['content-length'])) {
            $length = (int)$headers['content-length'];
            while (strlen($this->buf) < $length) {
                $this->fill($deadline, false);
            }
            $body = substr($this->buf, 0, $length);
            $this->buf = substr($this->buf, $length);
        } elseif (strtolower($headers['transfer-encoding'] ?? '') === 'chunked') {
            $body = $this->readChunked($deadline);
        } else {
            throw new RuntimeException('response without Content-Length');
        }
        if (strtolower($headers['connection'] ?? '') === 'close') {
            $this->close();
        }
        return [$status, $body];
    }

    private function readChunked(float $deadline): string
    {
        $body = '';
        while (true) {
            while (($eol = strpos($this->buf, "\r\n")) === false) {
                $this->fill($deadline, false);
            }
            $size = hexdec(trim(explode(';', substr($this->buf, 0, $eol))[0]));
            $this->buf = substr($this->buf, $eol + 2);
            if ($size === 0) {
                while (($end = strpos($this->buf, "\r\n")) !== 0) {
                    if ($end === false) {
                        $this->fill($deadline, false);
                    } else {
                        $this->buf = substr($this->buf, $end + 2);   // a trailer field
                    }
                }
                $this->buf = substr($this->buf, 2);
                return $body;
            }
            while (strlen($this->buf) < $size + 2) {
                $this->fill($deadline, false);
            }
            $body .= substr($this->buf, 0, $size);
            $this->buf = substr($this->buf, $size + 2);
        }
    }
}

/** The JSON answer for one request, from app() (a failure becomes a 500). */
function respond(array $job): string
{
    try {
        $body = base64_decode($job['body'] ?? '', true);
        if ($body === false) {
            throw new RuntimeException('undecodable body');
        }
        $env = array_map(fn($v) => is_string($v) ? latin1_to_bytes($v) : $v, $job['environment']);
        [$status, $headers, $out] = app($env, $body);
    } catch (Throwable $e) {
        say("{$job['identifier']}: app failed: $e");
        [$status, $headers, $out] = [500, ['Content-Type' => 'text/plain; charset=utf-8'], "Internal Server Error\n"];
    }
    $json = [];
    foreach ($headers as $name => $value) {
        $json[$name] = array_map(fn($v) => bytes_to_latin1((string)$v), (array)$value);
    }
    return json_encode([
        'identifier' => $job['identifier'],
        'code' => $status,
        'headers' => (object)$json,
        'body' => base64_encode((string)$out),
    ], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
}

function main(array $argv): int
{
    global $stopping;
    $api = rtrim($argv[1] ?? (getenv('PRACK_API') ?: 'http://127.0.0.1:4242'), '/');
    $url = parse_url($api);
    if (($url['scheme'] ?? '') !== 'http' || !isset($url['host'])) {
        say("not an http:// URL: $api");
        return 2;
    }
    $stopping = false;
    if (function_exists('pcntl_async_signals')) {
        pcntl_async_signals(true);
        $stop = function () use (&$stopping) { $stopping = true; };
        pcntl_signal(SIGTERM, $stop);
        pcntl_signal(SIGINT, $stop);
    }
    $conn = new ApiConnection($url['host'], $url['port'] ?? 80);   // "[::1]" keeps its brackets
    say("pulling requests from $api");
    $delay = 0.0;
    $connected = false;
    while (!$stopping) {
        try {
            [$status, $data] = $conn->call('GET', '/api/v1/request', null, true);
            if ($status !== 200 && $status !== 404) {
                // 503 while the server stops, or a proxy's error page
                throw new RuntimeException("GET /api/v1/request: $status");
            }
        } catch (Stopping $e) {
            break;
        } catch (Throwable $e) {
            $conn->close();
            $connected = false;
            $delay = $delay > 0 ? min($delay * 2, MAX_DELAY) : FIRST_DELAY;
            say("cannot reach $api ({$e->getMessage()}); retrying in {$delay} s");
            // usleep returns early when a signal arrives.
            usleep((int)($delay * 1e6));
            continue;
        }
        $delay = 0.0;
        if (!$connected) {
            say("connected to $api");
            $connected = true;
        }
        if ($status === 404) {
            continue;   // nothing pending within the poll timeout
        }
        // A request we took is answered even if SIGTERM arrives meanwhile.
        try {
            $job = json_decode($data, true, 512, JSON_THROW_ON_ERROR);
            [$posted, $reply] = $conn->call('POST', '/api/v1/response', respond($job), false);
            if ($posted !== 200) {
                // 410: the client left; 404: answered already or timed out;
                // 400: we sent something invalid (the client got 502).
                say("{$job['identifier']}: response refused: $posted " . trim($reply));
            }
        } catch (Throwable $e) {
            say("answering failed: {$e->getMessage()}");
        }
    }
    $conn->close();
    say('stopping');
    return 0;
}

exit(main($argv));
