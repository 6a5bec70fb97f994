#!/usr/bin/env ruby
# frozen_string_literal: true
#
# Runs a Rack application (a config.ru) as a Prack worker, with the standard
# library and the `rack` gem (Debian: ruby-rack), Rack 2 or Rack 3.
#
#   ruby examples/ruby/worker.rb [API URL] [config.ru]
#
# The API URL defaults to $PRACK_API, then http://127.0.0.1:4242; the rackup
# file to the config.ru beside this script. The app is wrapped in Rack::Lint,
# which checks every environment we build and every response the app gives
# (set PRACK_RACK_LINT=0 to leave it out in production).
#
# The loop: GET /api/v1/request long-polls for a request; the Prack
# environment becomes a Rack environment; the app's response goes back with
# POST /api/v1/response on the same keep-alive connection. SIGTERM (or
# Ctrl-C) abandons an idle poll at once, finishes a request already taken,
# and exits 0.

require "base64"
require "json"
require "net/http"
require "stringio"
require "uri"
require "rack"
require "rack/builder"
require "rack/lint"

module PrackRack
  FIRST_DELAY = 0.1   # seconds of backoff after the first failure
  MAX_DELAY = 5.0     # and its ceiling
  CALL_TIMEOUT = 60   # a poll lasts api.poll_timeout (5 s by default)
  RACK2 = Gem::Version.new(Rack.release) < Gem::Version.new("3")

  Stopping = Class.new(StandardError)

  def self.say(msg)
    $stderr.puts("ruby worker: #{msg}")
  end

  # Prack carries header bytes in JSON as ISO-8859-1 characters: turn them
  # back into the bytes the client sent (what Puma or Unicorn would give).
  def self.raw_bytes(str)
    str.encode(Encoding::ISO_8859_1).force_encoding(Encoding::BINARY)
  rescue EncodingError
    str.b
  end

  # The reverse, for response header values: each byte becomes the
  # character Prack encodes back to that byte.
  def self.latin1(str)
    str.b.force_encoding(Encoding::ISO_8859_1).encode(Encoding::UTF_8)
  end

  # A Rack environment from a Prack one (already CGI-shaped: REQUEST_METHOD,
  # SCRIPT_NAME, PATH_INFO, QUERY_STRING, SERVER_NAME/PORT, HTTP_* ...).
  def self.rack_env(prack_env, body)
    env = {}
    prack_env.each { |key, value| env[key] = raw_bytes(value) }
    env["SCRIPT_NAME"] = +""
    # `OPTIONS *` (RFC 9110 9.3.7): Rack 3.1 passes the asterisk in PATH_INFO;
    # Rack 2 wants PATH_INFO empty or starting with "/".
    env["PATH_INFO"] = +"" if RACK2 && env["PATH_INFO"] == "*"
    env["QUERY_STRING"] ||= +""
    env["SERVER_PROTOCOL"] ||= +"HTTP/1.1"
    env["rack.version"] = Rack::VERSION if RACK2
    env["rack.url_scheme"] = prack_env.fetch("rack.url_scheme", "http")
    env["rack.input"] = StringIO.new(body).tap(&:binmode)
    env["rack.errors"] = $stderr
    env["rack.multithread"] = false
    env["rack.multiprocess"] = true   # run as many worker processes as you like
    env["rack.run_once"] = false
    env["rack.hijack?"] = false
    env
  end

  # Collects a Rack body: one that responds to #each (always closed after),
  # or, in Rack 3, a streaming body that responds to #call.
  def self.read_body(body)
    out = +"".b
    if body.respond_to?(:each)
      body.each { |chunk| out << chunk.b }
    else
      body.call(Stream.new(out))
    end
    out
  ensure
    body.close if body.respond_to?(:close)
  end

  # The stream a Rack 3 streaming body writes to: everything is buffered.
  class Stream
    def initialize(out)
      @out = out
      @closed = false
    end

    def read(*)
      nil   # the request body is in rack.input
    end

    def write(data)
      data = data.to_s.b
      @out << data
      data.bytesize
    end

    def <<(data)
      write(data)
      self
    end

    def flush
      self
    end

    def close_read; end

    def close_write
      @closed = true
      nil
    end
    alias close close_write

    def closed?
      @closed
    end
  end

  # Rack 2 joins several values of one header with "\n"; Rack 3 uses arrays.
  def self.prack_headers(headers)
    out = {}
    headers.each do |name, value|
      values = value.is_a?(Array) ? value : value.to_s.split("\n")
      out[name.to_s] = values.map { |v| latin1(v.to_s) }
    end
    out
  end

  def self.error_response(status, text)
    [status, { "content-type" => "text/plain; charset=utf-8" }, [text]]
  end

  class Worker
    def initialize(app, api)
      @app = app
      @uri = URI(api)
      @http = nil
      @stopping = false
      @idle = false        # true while waiting for a request (safe to abort)
      @thread = nil
    end

    # Called from the signal handler: only sets flags and wakes the loop.
    def stop
      @stopping = true
      @thread&.raise(Stopping) if @idle
    end

    def run
      @thread = Thread.current
      PrackRack.say("pulling requests from #{@uri}")
      delay = 0
      connected = false
      until @stopping
        begin
          job = pull
        rescue Stopping
          break
        rescue StandardError => e
          disconnect
          connected = false
          delay = delay.zero? ? FIRST_DELAY : [delay * 2, MAX_DELAY].min
          PrackRack.say("cannot reach #{@uri} (#{e.class}: #{e.message}); retrying in #{delay} s")
          begin
            idle { sleep(delay) }
          rescue Stopping
            break
          end
          next
        end
        delay = 0
        unless connected
          PrackRack.say("connected to #{@uri}")
          connected = true
        end
        # A request we took is answered even if SIGTERM arrives meanwhile.
        serve(job) if job
      end
      disconnect
      PrackRack.say("stopping")
    end

    private

    def idle
      @idle = true
      raise Stopping if @stopping
      yield
    ensure
      @idle = false
    end

    def connection
      # nil: straight to the API, whatever http_proxy says.
      @http ||= Net::HTTP.new(@uri.hostname, @uri.port, nil).tap do |http|
        http.read_timeout = CALL_TIMEOUT
        http.open_timeout = 5
        http.keep_alive_timeout = 60
        http.start
      end
    end

    def disconnect
      @http&.finish if @http&.started?
    rescue IOError
      nil
    ensure
      @http = nil
    end

    # One long poll: the job, or nil when nothing arrived in time.
    def pull
      http = connection
      response = idle do
        # Once the answer has begun, the request it may carry is ours to
        # serve: a SIGTERM from then on waits for it.
        http.request(Net::HTTP::Get.new("/api/v1/request")) { @idle = false }
      end
      case response.code
      when "200" then JSON.parse(response.body)
      when "404" then nil        # nothing pending within the poll timeout
      else raise "GET /api/v1/request: #{response.code}"   # 503 while stopping
      end
    end

    def serve(job)
      reply = post_answer(JSON.generate(respond(job)))
      return if reply.code == "200"
      # 410: the client left; 404: answered already or timed out; 400: we
      # sent something invalid (the client got 502). None is fatal.
      PrackRack.say("#{job['identifier']}: response refused: #{reply.code} #{reply.body}")
    rescue StandardError => e
      disconnect
      PrackRack.say("#{job['identifier']}: posting the response failed: #{e.message}")
    end

    # Net::HTTP sends a GET again when the server has closed a kept-alive
    # connection (a restart, or its limits on idle connections), not a
    # POST: this one goes once more on a new connection (sent twice, it is
    # harmless: the second gets 404).
    def post_answer(answer)
      attempts = 0
      begin
        post = Net::HTTP::Post.new("/api/v1/response", "Content-Type" => "application/json")
        post.body = answer
        connection.request(post)
      rescue IOError, Errno::ECONNRESET, Errno::EPIPE, Errno::ECONNABORTED
        disconnect
        attempts += 1
        retry if attempts == 1
        raise
      end
    end

    def respond(job)
      body = job.fetch("body", "").unpack1("m0")
      status, headers, chunks = call_app(PrackRack.rack_env(job["environment"], body))
      { "identifier" => job["identifier"], "code" => status.to_i,
        "headers" => PrackRack.prack_headers(headers), "body" => Base64.encode64(chunks) }
    end

    def call_app(env)
      status, headers, body = @app.call(env)
      [status, headers, PrackRack.read_body(body)]
    rescue StandardError => e
      # Rack::Lint::LintError lands here too: the response is not sent.
      PrackRack.say("app failed: #{e.class}: #{e.message}")
      e.backtrace&.first(5)&.each { |line| $stderr.puts("    #{line}") }
      status, headers, body = PrackRack.error_response(500, "Internal Server Error\n")
      [status, headers, body.join]
    end
  end

  def self.main(argv)
    api = (argv[0] || ENV["PRACK_API"] || "http://127.0.0.1:4242").chomp("/")
    rackup = argv[1] || File.join(__dir__, "config.ru")
    unless api.start_with?("http://")
      say("not an http:// URL: #{api}")
      return 2
    end
    app = Rack::Builder.parse_file(rackup)
    app = app.first if app.is_a?(Array)     # Rack 2 returns [app, options]
    if ENV["PRACK_RACK_LINT"] == "0"
      say("serving #{rackup} (Rack #{Rack.release}) without Rack::Lint")
    else
      app = Rack::Lint.new(app)
      say("serving #{rackup} (Rack #{Rack.release}) through Rack::Lint")
    end
    worker = Worker.new(app, api)
    %w[TERM INT].each { |sig| trap(sig) { worker.stop } }
    worker.run
    0
  end
end

exit(PrackRack.main(ARGV)) if $PROGRAM_NAME == __FILE__
