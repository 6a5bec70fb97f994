# An example Rack application for examples/ruby/worker.rb. It runs unchanged
# under any Rack server (rackup, Puma ...), on Rack 2 or Rack 3.

class Demo
  TEXT = { "content-type" => "text/plain; charset=utf-8" }.freeze

  def call(env)
    req = Rack::Request.new(env)
    case req.path_info
    when "/"
      [200, TEXT.dup, ["Hello from Ruby ✓\n"]]
    when "/echo"
      # The request's body, byte for byte, described by x-echo-* headers.
      headers = {
        "content-type" => "application/octet-stream",
        "x-echo-method" => req.request_method,
        "x-echo-path" => req.path_info,
        "x-echo-query" => req.query_string,
      }
      headers["x-echo-header"] = env["HTTP_X_TEST"] if env.key?("HTTP_X_TEST")
      [200, headers, [req.body.read]]
    when "/cookies"
      res = Rack::Response.new(["two cookies\n"], 200, TEXT.dup)
      res.set_cookie("a", { value: "1", path: "/" })
      res.set_cookie("b", { value: "2", path: "/" })
      res.finish
    when "/binary"
      [200, { "content-type" => "application/octet-stream" }, [(0..255).to_a.pack("C*")]]
    when "/broken"
      # Deliberately invalid: a 204 must not carry a content type. Rack::Lint
      # catches it, and the worker answers 500 instead of sending it.
      [204, TEXT.dup, []]
    else
      [404, TEXT.dup, ["Not found: #{req.path_info}\n"]]
    end
  end
end

# A HEAD answer carries no body; Rack::Lint insists, so drop it here.
use Rack::Head
run Demo.new
