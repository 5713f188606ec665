-- Cycles through pre-generated request bodies (separated by NUL bytes) so that every request
-- carries its own Message-ID and signed token: `wrk -s bench/bodies.lua URL -- FILE [SKIP]`
-- (SKIP bodies are passed over first, so that repeated runs over one file stay unique).
local bodies = {}
local sent = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local start = 1
  while true do
    local s = string.find(data, "\0", start, true)
    if not s then break end
    bodies[#bodies + 1] = string.sub(data, start, s - 1)
    start = s + 1
  end
  sent = tonumber(args[2] or "0")
end

function request()
  sent = sent + 1
  return wrk.format("POST", nil, nil, bodies[((sent - 1) % #bodies) + 1])
end
