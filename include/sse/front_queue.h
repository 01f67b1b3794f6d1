/* sse/front_queue.h — a first-in first-out queue that holds no heap memory while it never held
 * anything, and gives back what it grew to once emptied.
 *
 * Why not std::deque: libstdc++'s deque allocates its map (64 bytes) and a 512-byte node when
 * it is constructed, empty or not, and keeps the node when cleared. A held stream has two
 * queues (its pieces, its non-event marks) and is idle most of its life: the two deques were
 * about 1.2 KB of every idle stream's 23 KB (t/memory.t).
 *
 * What it is: a std::vector read from a head index. pop_front() moves the head; the vector is
 * emptied when the head reaches its end and compacted when the head passes half of it (each
 * element moves at most once per time it is popped: amortised O(1), like the deque). clear()
 * and an emptying pop_front() keep up to kKeptCapacity slots (1 KB of SharedBytes) and free a
 * larger capacity, so a stream that once queued thousands of events does not keep their
 * slots, while one that gets bursts of up to 64 pieces per round does not grow its vector
 * again every round (with 16 kept, bench/fanout_bench.c++ at 10,000 streams x 40 events a
 * round went from 57-65 to 73-77 ns per delivery; with 64, 38 ns against the deque's 54-56).
 * A stream queued thousands of pieces a round grows its vector each round: 17.3-17.8 ns per
 * delivery against the deque's 15.5-15.9 (1,000 streams x 4,000 events a round).
 *
 * Iterators run from the front (begin()) to the back (end()) and, like a vector's, are
 * invalidated by any change. Not thread-safe (the owner's thread only, as Subscriber).
 */
#ifndef SSE_FRONT_QUEUE_H
#define SSE_FRONT_QUEUE_H

#include <cstddef>
#include <utility>
#include <vector>

namespace sse {

template <class T> class FrontQueue {
public:
    using const_iterator = typename std::vector<T>::const_iterator;

    bool empty() const { return head_ == items_.size(); }
    std::size_t size() const { return items_.size() - head_; }
    const T &front() const { return items_[head_]; }
    const_iterator begin() const { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
    const_iterator end() const { return items_.end(); }
    /* Slots allocated (popped ones included): what the queue holds in memory. */
    std::size_t capacity() const { return items_.capacity(); }

    void push_back(const T &item) { items_.push_back(item); }

    /* Not on an empty queue. */
    void pop_front()
    {
        items_[head_] = T(); /* drops what the element holds now, not at the next compaction */
        if (++head_ == items_.size())
            clear();
        else if (head_ > kKeptCapacity && head_ * 2 > items_.size()) {
            items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
            head_ = 0;
        }
    }

    void clear()
    {
        head_ = 0;
        if (items_.capacity() > kKeptCapacity)
            std::vector<T>().swap(items_);
        else
            items_.clear();
    }

private:
    /* Slots kept once emptied (see above); an idle stream that never had a burst has fewer. */
    static constexpr std::size_t kKeptCapacity = 64;

    std::vector<T> items_;
    std::size_t head_ = 0; /* items_[0, head_) are popped */
};

/* A FrontQueue that holds an element pushed onto an empty queue in itself, not in its
 * vector: a queue that rarely holds more than one element (a stream's pieces between two
 * writes) touches no heap memory for it. That element is the front while it is there; the
 * others follow it in the vector, in order. T's default value means "none there" (an empty
 * shared_ptr): an element equal to it must not be pushed. Iterators run from the front and
 * are invalidated by any change, as FrontQueue's. */
template <class T> class FrontQueueOne {
public:
    class const_iterator {
    public:
        const T &operator*() const { return one_ ? *one_ : *it_; }
        const T *operator->() const { return &**this; }
        const_iterator &operator++()
        {
            if (one_)
                one_ = nullptr;
            else
                ++it_;
            return *this;
        }
        bool operator==(const const_iterator &o) const { return one_ == o.one_ && it_ == o.it_; }
        bool operator!=(const const_iterator &o) const { return !(*this == o); }

    private:
        friend class FrontQueueOne;
        const_iterator(const T *one, typename FrontQueue<T>::const_iterator it) : one_(one), it_(it)
        {
        }
        const T *one_; /* the held element, before the vector's */
        typename FrontQueue<T>::const_iterator it_;
    };

    bool empty() const { return !held() && rest_.empty(); }
    std::size_t size() const { return (held() ? 1 : 0) + rest_.size(); }
    const T &front() const { return held() ? one_ : rest_.front(); }
    const_iterator begin() const { return const_iterator(held() ? &one_ : nullptr, rest_.begin()); }
    const_iterator end() const { return const_iterator(nullptr, rest_.end()); }
    /* Slots the vector allocated (the held one not counted). */
    std::size_t capacity() const { return rest_.capacity(); }
    void push_back(const T &item)
    {
        if (empty())
            one_ = item;
        else
            rest_.push_back(item);
    }
    /* Not on an empty queue. */
    void pop_front()
    {
        if (held())
            one_ = T();
        else
            rest_.pop_front();
    }
    void clear()
    {
        one_ = T();
        rest_.clear();
    }

private:
    bool held() const { return one_ != T(); }
    T one_{};
    FrontQueue<T> rest_;
};

} // namespace sse

#endif
