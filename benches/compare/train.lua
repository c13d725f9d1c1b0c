-- wrk script for pgo.sh: the traffic the profile-guided build is trained on.
-- Each connection cycles through reports of three categories with several
-- forms of time (timestamps, dates, `today`, `end`, a zone), a session's
-- details, and the refusals a gateway answers every day (another manager's
-- queue, an unknown key, a path that is not Chime's).
--
-- One request per line: target, whose key, the status the gateway answers.
-- tests/training_mix.rs sends each and checks that status, so the training
-- cannot drift into refusals unnoticed.
local keys = {
  manager = "Bearer b5c38d85-a042-4cef-8418-eb06752e346b",
  admin = "Bearer 0f0e9a4c-2b7d-4c1e-9d3a-6b5f8e2a7c10",
  unknown = "Bearer 00000000-0000-0000-0000-000000000000",
}
local reqs = {
  {"/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-11-02T04:59:59.999Z&csv=true", "manager", 200},
  {"/Chime/Report/ChatsByHourOfDay?queueId=1&start=2020-11-01&stop=2020-11-08&zone=America/New_York", "manager", 200},
  {"/Chime/Report/AbandonedChats?queueId=1&start=today&csv=true", "manager", 200},
  {"/Chime/Report/ChatDuration?queueId=3&start=2020-10-01T00:00:00Z&end=2020-10-31T00:00:00Z", "admin", 200},
  {"/Chime/Report/QueueComparison?start=2020-11-01&stop=2020-11-02", "admin", 200},
  {"/Chime/Session/SessionDetails/4", "admin", 200},
  {"/Chime/Report/InboundVsAnsweredChats?queueId=2&start=2020-11-01&stop=2020-11-02", "manager", 403},
  {"/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01&stop=2020-11-02", "unknown", 401},
  {"/Chime/Nope", "manager", 404},
}
local i = 0
request = function()
  i = i % #reqs + 1
  return wrk.format("GET", reqs[i][1], { ["Authorization"] = keys[reqs[i][2]] })
end
