package enqueue

// What the tests read of the package's state, outside the shipped build.

// Len is the number of jobs in the spool.
func (s *Spool) Len() int { return s.count }

// len is the number of ids in the set.
func (s *idSet) len() int { return s.n }

// Pending is the number of expected results still to come.
func (c *Collector) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// Status is the one-line state: published 1200/5000 (300 done before), ok
// 1100, failed 3.
func (p *Progress) Status() string { return p.status(p.read()) }
