package control

// Server → client messages of the application tier's interactions: polls,
// their results, and broadcaster branding.

// Error codes of votes, each carrying the vote's id.
const (
	ErrCodePollClosed  = "poll_closed"     // the poll no longer takes votes
	ErrCodeBadChoice   = "bad_choice"      // choice outside the poll's choices
	ErrCodeNotAudience = "not_in_audience" // the poll is not aimed at this viewer
)

// Poll asks the audience a question. Choice is set in a message to one
// link when that user has already voted (after a reload, say).
type Poll struct {
	ID       string   `json:"id"`
	Stream   string   `json:"stream"`
	Question string   `json:"question"`
	Choices  []string `json:"choices"`
	State    string   `json:"state"`               // open or closed
	ClosesAt int64    `json:"closes_at,omitempty"` // unix ms; absent: closed by hand
	Choice   *int     `json:"choice,omitempty"`
}

// Results are a poll's counts per choice. Final is true once the poll is
// closed; these are then the final results.
type Results struct {
	Poll   string  `json:"poll"`
	Counts []int64 `json:"counts"`
	Total  int64   `json:"total"`
	Final  bool    `json:"final"`
}

// Branding is how the broadcaster dresses a stream's page.
type Branding struct {
	Stream   string     `json:"stream"`
	Title    string     `json:"title,omitempty"`
	LogoURL  string     `json:"logo_url,omitempty"`
	Upcoming []Upcoming `json:"upcoming,omitempty"`
}

// Upcoming is a scheduled broadcast.
type Upcoming struct {
	Title    string `json:"title"`
	StartsAt int64  `json:"starts_at"` // unix ms
	Stream   string `json:"stream,omitempty"`
}

func (Poll) MessageType() string     { return TypePoll }
func (Results) MessageType() string  { return TypeResults }
func (Branding) MessageType() string { return TypeBranding }
