package sender

// Sending is how many of Config.MaxRequests places are taken now: requests
// in flight (0 when MaxRequests is 0, which does not count them). With
// Queued it tells an autoscaler what this process is busy with.
func (s *Sender) Sending() int { return len(s.places) }
